import Foundation
internal import KafkaClient
import Logging
import ReplicationCore

// MARK: - Validation: ranges, defaults, DSN files, the environment's overrides applied

extension RawConfig {
    func validated(file: String, environment: [String: String]) throws(ConfigError) -> ReplicatorConfig {
        func fail(_ key: String, _ message: String) -> ConfigError { ConfigError(file: file, key: key, message: message) }

        // kafka
        let brokers = brokers ?? Sourced(value: "127.0.0.1:9092", key: "kafka.brokers")
        let entries = brokers.value.split(separator: ",", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        if brokers.value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw fail(brokers.key, "must not be empty (a comma-separated list of host:port)")
        }
        if entries.contains(where: \.isEmpty) {
            throw fail(brokers.key, "has an empty entry in the comma-separated broker list \(quoted(brokers.value))")
        }
        let topic = topic ?? Sourced(value: "chat.messages", key: "kafka.topic")
        if topic.value.isEmpty { throw fail(topic.key, "must not be empty") }
        let topicOK = topic.value.utf8.count <= 249 && topic.value.allSatisfy {
            $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-")
        }
        if !topicOK {
            throw fail(topic.key, "invalid Kafka topic name \(quoted(topic.value)): at most 249 letters, digits, '.', '_' or '-'")
        }
        let groupPrefix = groupPrefix ?? Sourced(value: "region-replicator", key: "kafka.group_prefix")
        if groupPrefix.value.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
            throw fail(groupPrefix.key, "must not be empty")
        }
        if let id = groupInstanceID {
            let ok = (1...200).contains(id.value.utf8.count)
                && id.value.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
            if !ok {
                throw fail(id.key, "invalid group instance id \(quoted(id.value)): 1 to 200 letters, digits, '.', '_' or '-' (each region's consumer gets \"<id>.<region>\")")
            }
        }
        // Secrets from files: their text is the value, less the line break an editor or `echo` adds.
        var kafkaProperties = properties
        for (passwordFile, property) in [(saslPasswordFile, "sasl.password"), (sslKeyPasswordFile, "ssl.key.password")] {
            guard let passwordFile else { continue }
            var password = try Self.readCredentialFile(passwordFile, configFile: file, environment: environment)
            while let last = password.last, last == "\n" || last == "\r\n" || last == "\r" { password.removeLast() }
            if password.isEmpty {
                throw fail(passwordFile.key, "\(Self.resolve(passwordFile.value, configFile: file, environment: environment)) is empty; expected a password")
            }
            kafkaProperties[property] = password
        }
        let kafka = ReplicatorConfig.Kafka(
            brokers: brokers.value, topic: topic.value, groupPrefix: groupPrefix.value,
            groupInstanceID: groupInstanceID?.value, properties: kafkaProperties)

        // regions
        guard let rawRegions = regions else {
            throw fail("regions", "required key is missing: list at least one region (each with name and dsn or dsn_file)")
        }
        var regions: [ReplicatorConfig.Region] = []
        for raw in rawRegions.value {
            let dsn: String
            if let env = raw.envDSN {
                dsn = env.value
                if dsn.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { throw fail(env.key, "must not be empty") }
            } else {
                switch raw.dsn {
                case .inline(let inline):
                    dsn = inline.value
                    if dsn.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { throw fail(inline.key, "must not be empty") }
                case .file(let dsnFile):
                    dsn = try Self.readDSNFile(dsnFile, configFile: file, environment: environment)
                case nil:
                    throw fail(raw.key, "missing dsn or dsn_file (or the environment variable "
                        + "\(ReplicatorConfig.dsnEnvironmentVariable(forRegion: raw.name))) for region \(quoted(raw.name))")
                }
            }
            regions.append(ReplicatorConfig.Region(name: raw.name, dsn: Secret(dsn), capture: raw.capture?.value))
        }

        // apply
        let tableText = table ?? Sourced(value: "messages", key: "apply.table")
        let tableName: TableName
        do {
            tableName = try TableName(validating: tableText.value)
        } catch {
            throw fail(tableText.key, "invalid table name \(quoted(tableText.value)): \(error.problem)")
        }
        let maxBatchEvents = try Self.checkRange(maxBatchEvents, default: 1000, key: "apply.max_batch_events", 1...100_000, file: file)
        let maxBatchDelayMs = try Self.checkRange(maxBatchDelayMs, default: 20, key: "apply.max_batch_delay_ms", 0...60_000, file: file)
        for (_, column) in columns.sorted(by: { $0.key < $1.key }) {
            do { try MessageColumns.validate(column.value) } catch {
                throw fail(column.key, "invalid column name \(quoted(column.value)): \(error.problem)")
            }
        }
        if let a = attributesColumn {
            do { try MessageColumns.validate(a.value) } catch {
                throw fail(a.key, "invalid column name \(quoted(a.value)): \(error.problem)")
            }
        }
        let messageColumns: MessageColumns
        do {
            messageColumns = try MessageColumns(mapping: columns.mapValues(\.value),
                                                replicatedAt: noReplicatedAt ? .some(nil) : nil,
                                                attributes: attributesColumn?.value)
        } catch {
            throw fail(columnsKey ?? "apply.columns", "\(quoted(error.text)): \(error.problem)")
        }
        let maxBatchBytes = try Self.checkRange(maxBatchBytes, default: ReplicatorConfig.Apply.defaultMaxBatchBytes,
                                                key: "apply.max_batch_bytes", 65_536...268_435_456, file: file)
        let connections = try Self.checkRange(connections, default: ReplicatorConfig.Apply.defaultConnections,
                                              key: "apply.connections", 1...16, file: file)
        let statementTimeoutMs = try Self.checkRange(statementTimeoutMs, default: ReplicatorConfig.Apply.defaultStatementTimeoutMs,
                                                     key: "apply.statement_timeout_ms", 1000...3_600_000, file: file)
        let lockTimeoutMs = try Self.checkRange(lockTimeoutMs, default: ReplicatorConfig.Apply.defaultLockTimeoutMs(statementTimeoutMs: statementTimeoutMs),
                                                key: "apply.lock_timeout_ms", 100...(statementTimeoutMs - 1), file: file)
        let apply = ReplicatorConfig.Apply(
            table: tableName, maxBatchEvents: maxBatchEvents, maxBatchDelayMs: maxBatchDelayMs,
            applyToOrigin: applyToOrigin?.value ?? false, maxBatchBytes: maxBatchBytes, columns: messageColumns,
            connections: connections, statementTimeoutMs: statementTimeoutMs, lockTimeoutMs: lockTimeoutMs)

        // http
        let listen = listen ?? Sourced(value: "127.0.0.1:9466", key: "http.listen")
        if case .failure(let why) = ReplicatorConfig.checkListen(listen.value) {
            throw fail(listen.key, why.description)
        }
        let freshMaxWaitMs = try Self.checkRange(freshMaxWaitMs, default: ReplicatorConfig.HTTP.defaultFreshMaxWaitMs,
                                                 key: "http.fresh_max_wait_ms", 0...300_000, file: file)
        let freshMaxWaiters = try Self.checkRange(freshMaxWaiters, default: ReplicatorConfig.HTTP.defaultFreshMaxWaiters,
                                                  key: "http.fresh_max_waiters", 1...100_000, file: file)

        // log
        let level = level ?? Sourced(value: "info", key: "log.level")
        guard let logLevel = Logger.Level(rawValue: level.value.lowercased()) else {
            throw fail(level.key, "expected one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), got \(quoted(level.value))")
        }
        let format = format ?? Sourced(value: "text", key: "log.format")
        guard let logFormat = ReplicatorConfig.LogFormat(rawValue: format.value.lowercased()) else {
            throw fail(format.key, "expected text or json, got \(quoted(format.value))")
        }

        var config = ReplicatorConfig(
            kafka: kafka, regions: regions, apply: apply, http: .init(listen: listen.value, freshMaxWaitMs: freshMaxWaitMs, freshMaxWaiters: freshMaxWaiters),
            log: .init(level: logLevel, format: logFormat), path: file)
        config.verify = try verify.validated(file: file)
        config.capture = try capture.validated(file: file, regions: regions)
        return config
    }

    private static func checkRange(
        _ value: Sourced<Int>?, default defaultValue: Int, key: String, _ range: ClosedRange<Int>, file: String
    ) throws(ConfigError) -> Int {
        guard let value else { return defaultValue }
        guard range.contains(value.value) else {
            throw ConfigError(
                file: file, key: value.key,
                message: "must be between \(range.lowerBound) and \(range.upperBound), got \(value.value)")
        }
        return value.value
    }

    /// Reads a `dsn_file`. Errors name the key and the path, never the content.
    private static func readDSNFile(
        _ dsnFile: Sourced<String>, configFile: String, environment: [String: String]
    ) throws(ConfigError) -> String {
        let dsn = try readCredentialFile(dsnFile, configFile: configFile, environment: environment)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        if dsn.isEmpty {
            throw ConfigError(file: configFile, key: dsnFile.key, message: "\(resolve(dsnFile.value, configFile: configFile, environment: environment)) is empty; expected a DSN")
        }
        return dsn
    }

    /// The path of a credential file named in the configuration: an absolute path as is, a
    /// relative one against `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`) when set, else
    /// against the configuration file's directory.
    static func resolve(_ given: String, configFile: String, environment: [String: String]) -> String {
        if given.hasPrefix("/") { return given }
        if let credentials = environment["CREDENTIALS_DIRECTORY"], !credentials.isEmpty {
            return credentials.hasSuffix("/") ? credentials + given : credentials + "/" + given
        }
        let directory = configFile.lastIndex(of: "/").map { String(configFile[...$0]) } ?? ""
        return directory + given
    }

    /// Reads a file holding a secret (a DSN, a password): at most 64 KiB of UTF-8 without NUL.
    /// Errors name the key and the path, never the content.
    static func readCredentialFile(
        _ credentialFile: Sourced<String>, configFile: String, environment: [String: String]
    ) throws(ConfigError) -> String {
        func fail(_ message: String) -> ConfigError { ConfigError(file: configFile, key: credentialFile.key, message: message) }
        if credentialFile.value.isEmpty { throw fail("must not be empty") }
        let resolved = resolve(credentialFile.value, configFile: configFile, environment: environment)
        switch readFile(atPath: resolved, limit: 64 * 1024) {
        case .failure(let why):
            throw fail("cannot read \(resolved): \(why)")
        case .success(let bytes):
            guard let text = String(validating: bytes, as: UTF8.self) else { throw fail("\(resolved) is not valid UTF-8") }
            if bytes.contains(0) { throw fail("\(resolved) contains a NUL byte") }
            return text
        }
    }
}
