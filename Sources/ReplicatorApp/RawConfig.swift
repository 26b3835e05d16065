import Foundation
internal import KafkaClient
import Logging
import ReplicationCore
internal import Yams

// MARK: - Raw (parsed, not yet validated) configuration

/// A value and where it came from: a YAML key path or an environment variable name.
struct Sourced<Value> {
    var value: Value
    var key: String
}

/// What the file (then the environment) said, type-checked but not yet range-checked.
struct RawConfig {
    enum DSNSource {
        case inline(Sourced<String>)
        case file(Sourced<String>)
    }

    struct RawRegion {
        var key: String  // regions[i]
        var name: String
        var nameKey: String
        var dsn: DSNSource?
        var envDSN: Sourced<String>?
    }

    var brokers: Sourced<String>?
    var topic: Sourced<String>?
    var groupPrefix: Sourced<String>?
    var groupInstanceID: Sourced<String>?
    var properties: [String: String] = [:]
    var regions: Sourced<[RawRegion]>?
    var table: Sourced<String>?
    var maxBatchEvents: Sourced<Int>?
    var maxBatchDelayMs: Sourced<Int>?
    var maxBatchBytes: Sourced<Int>?
    var connections: Sourced<Int>?
    var applyToOrigin: Sourced<Bool>?
    var columns: [String: Sourced<String>] = [:]
    var columnsKey: String?
    /// `apply.columns.replicated_at: null`: the table has no such column.
    var noReplicatedAt = false
    var attributesColumn: Sourced<String>?
    var listen: Sourced<String>?
    var level: Sourced<String>?
    var format: Sourced<String>?
    var verify = RawVerify()

    static let topKeys = ["kafka", "regions", "apply", "http", "log", "verify"]
    static let kafkaKeys = ["brokers", "topic", "group_prefix", "group_instance_id", "properties"]

    /// librdkafka properties the replication guarantees depend on (offsets live in each region's
    /// database and are committed to Kafka only after the database commit).
    static let managedKafkaProperties: [String: String] = [
        "group.id": "each region's group is \"<group_prefix>.<region>\" (set kafka.group_prefix)",
        "group.instance.id": "each region's consumer gets \"<group_instance_id>.<region>\" (set kafka.group_instance_id)",
        "enable.auto.commit": "offsets are committed after each region's database commit",
        "enable.auto.offset.store": "offsets are stored after each region's database commit",
        "bootstrap.servers": "set kafka.brokers",
        "metadata.broker.list": "set kafka.brokers",
    ]
    static let regionKeys = ["name", "dsn", "dsn_file"]
    static let applyKeys = ["table", "max_batch_events", "max_batch_delay_ms", "max_batch_bytes", "apply_to_origin",
                            "columns", "attributes_column", "connections"]
    static let httpKeys = ["listen"]
    static let logKeys = ["level", "format"]

    /// The keys each top-level section accepts: the lists the parser below walks with.
    static func sectionKeys(_ section: String) -> [String] {
        switch section {
        case "kafka": kafkaKeys
        case "regions": regionKeys
        case "apply": applyKeys
        case "http": httpKeys
        case "log": logKeys
        case "verify": RawVerify.keys
        default: []
        }
    }

    /// Every key path the file may hold, as docs/configuration.md names them: each section,
    /// then its keys (`kafka.brokers`, `regions[].name`). Built from the lists the parser uses, so
    /// a test can hold the documentation to exactly these.
    static var acceptedKeyPaths: [String] {
        topKeys.flatMap { section in
            let prefix = section == "regions" ? "regions[]." : section + "."
            return [section] + sectionKeys(section).map { prefix + $0 }
        }
    }

    // MARK: Parsing

    static func parse(yaml: String, file: String) throws(ConfigError) -> RawConfig {
        let walker = YAMLWalker(file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            throw ConfigError(file: file, key: nil, message: YAMLWalker.describe(error))
        } catch {
            throw ConfigError(file: file, key: nil, message: "invalid YAML")
        }
        guard let root, !root.isNullScalar else {
            throw ConfigError(file: file, key: nil, message: "the file is empty; expected a mapping with at least `regions`")
        }
        guard case .mapping = root else {
            throw ConfigError(
                file: file, key: nil,
                message: "expected a mapping (with keys \(topKeys.joined(separator: ", "))) at the top level, got \(YAMLWalker.kind(of: root))")
        }

        var raw = RawConfig()
        for entry in try walker.entries(of: root, at: "", known: topKeys) {
            switch entry.name {
            case "kafka": try raw.parseKafka(entry.node, at: entry.key, walker)
            case "regions": try raw.parseRegions(entry.node, at: entry.key, walker)
            case "apply":
                for e in try walker.entries(of: entry.node, at: entry.key, known: applyKeys) {
                    switch e.name {
                    case "table": raw.table = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                    case "max_batch_events": raw.maxBatchEvents = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "max_batch_delay_ms": raw.maxBatchDelayMs = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "max_batch_bytes": raw.maxBatchBytes = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "connections": raw.connections = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "columns":
                        raw.columnsKey = e.key
                        if e.node.isNullScalar { continue }
                        for c in try walker.entries(of: e.node, at: e.key, known: MessageColumns.fieldKeys) {
                            if c.name == "replicated_at", c.node.isNullScalar {
                                raw.noReplicatedAt = true
                                continue
                            }
                            raw.columns[c.name] = Sourced(value: try walker.string(c.node, at: c.key), key: c.key)
                        }
                    case "attributes_column":
                        if e.node.isNullScalar { continue }
                        raw.attributesColumn = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                    default: raw.applyToOrigin = Sourced(value: try walker.bool(e.node, at: e.key), key: e.key)
                    }
                }
            case "verify": try raw.verify.parse(entry.node, at: entry.key, walker)
            case "http":
                for e in try walker.entries(of: entry.node, at: entry.key, known: httpKeys) {
                    raw.listen = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                }
            default:  // log
                for e in try walker.entries(of: entry.node, at: entry.key, known: logKeys) {
                    let value = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                    if e.name == "level" { raw.level = value } else { raw.format = value }
                }
            }
        }
        return raw
    }

    private mutating func parseKafka(_ node: Node, at key: String, _ walker: YAMLWalker) throws(ConfigError) {
        for e in try walker.entries(of: node, at: key, known: Self.kafkaKeys) {
            switch e.name {
            case "brokers": brokers = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            case "topic": topic = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            case "group_prefix": groupPrefix = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            case "group_instance_id":
                if e.node.isNullScalar { continue }
                groupInstanceID = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            default:
                if e.node.isNullScalar { continue }
                guard case .mapping(let mapping) = e.node else {
                    throw walker.error(e.key, "expected a mapping of librdkafka property names to values, got \(YAMLWalker.kind(of: e.node))")
                }
                for (keyNode, valueNode) in mapping {
                    guard case .scalar(let keyScalar) = keyNode, !keyNode.isNullScalar, !keyScalar.string.isEmpty else {
                        throw walker.error(e.key, "property names must be non-empty strings, got \(YAMLWalker.kind(of: keyNode))")
                    }
                    let propertyKey = "\(e.key).\(keyScalar.string)"
                    // Values are not quoted in errors: they may be secrets (sasl.password).
                    guard case .scalar(let valueScalar) = valueNode, !valueNode.isNullScalar else {
                        throw walker.error(propertyKey, "expected a string, number or boolean, got \(YAMLWalker.kind(of: valueNode))")
                    }
                    if let why = Self.managedKafkaProperties[keyScalar.string] {
                        throw walker.error(propertyKey, "is set by region-replicator itself and cannot be overridden: \(why)")
                    }
                    // librdkafka itself judges each property, here at load time, so that a misspelt
                    // one stops every command with exit 78 naming it (not only those that connect to
                    // Kafka, and not later as a client error). Its value is never echoed.
                    do {
                        try KafkaConfiguration([(keyScalar.string, valueScalar.string)]).validate()
                    } catch {
                        throw walker.error(propertyKey, error.message.hasSuffix("unknown property")
                            ? "librdkafka has no such property (misspelt? see librdkafka's CONFIGURATION.md)"
                            : "librdkafka refuses this value (not shown: it may be a secret)")
                    }
                    properties[keyScalar.string] = valueScalar.string
                }
            }
        }
    }

    private mutating func parseRegions(_ node: Node, at key: String, _ walker: YAMLWalker) throws(ConfigError) {
        if node.isNullScalar {
            throw walker.error(key, "must list at least one region (each with name and dsn or dsn_file)")
        }
        guard case .sequence(let sequence) = node else {
            throw walker.error(key, "expected a sequence of regions (each with name and dsn or dsn_file), got \(YAMLWalker.kind(of: node))")
        }
        var items: [RawRegion] = []
        var seen: [String: String] = [:]  // name -> key of the first
        for (index, item) in sequence.enumerated() {
            let itemKey = "\(key)[\(index)]"
            guard case .mapping = item else {
                throw walker.error(itemKey, "expected a mapping with name and dsn or dsn_file, got \(YAMLWalker.kind(of: item))")
            }
            var name: Sourced<String>?
            var dsn: Sourced<String>?
            var dsnFile: Sourced<String>?
            for e in try walker.entries(of: item, at: itemKey, known: Self.regionKeys, nullIsEmpty: false) {
                switch e.name {
                case "name": name = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                case "dsn": dsn = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                default: dsnFile = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                }
            }
            guard let name else { throw walker.error("\(itemKey).name", "required key is missing") }
            if let problem = Self.regionNameProblem(name.value) {
                throw walker.error(name.key, problem)
            }
            if let first = seen[name.value] {
                throw walker.error(name.key, "duplicate region name \(quoted(name.value)) (also \(first))")
            }
            seen[name.value] = name.key
            if dsn != nil && dsnFile != nil {
                throw walker.error(itemKey, "set exactly one of dsn or dsn_file, not both")
            }
            let source: DSNSource? = dsn.map { .inline($0) } ?? dsnFile.map { .file($0) }
            items.append(RawRegion(key: itemKey, name: name.value, nameKey: name.key, dsn: source, envDSN: nil))
        }
        if items.isEmpty {
            throw walker.error(key, "must list at least one region (each with name and dsn or dsn_file)")
        }
        regions = Sourced(value: items, key: key)
    }

    static func regionNameProblem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        func alnum(_ c: UInt8) -> Bool { (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) }
        let ok = !bytes.isEmpty && bytes.count <= 63 && alnum(bytes[0])
            && bytes.dropFirst().allSatisfy { alnum($0) || $0 == 46 || $0 == 95 || $0 == 45 }
        if ok { return nil }
        return "invalid region name \(quoted(name)): expected 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit"
    }

    // MARK: Validation

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
        let kafka = ReplicatorConfig.Kafka(
            brokers: brokers.value, topic: topic.value, groupPrefix: groupPrefix.value,
            groupInstanceID: groupInstanceID?.value, properties: properties)

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
            regions.append(ReplicatorConfig.Region(name: raw.name, dsn: Secret(dsn)))
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
        let apply = ReplicatorConfig.Apply(
            table: tableName, maxBatchEvents: maxBatchEvents, maxBatchDelayMs: maxBatchDelayMs,
            applyToOrigin: applyToOrigin?.value ?? false, maxBatchBytes: maxBatchBytes, columns: messageColumns,
            connections: connections)

        // http
        let listen = listen ?? Sourced(value: "127.0.0.1:9466", key: "http.listen")
        if case .failure(let why) = ReplicatorConfig.checkListen(listen.value) {
            throw fail(listen.key, why.description)
        }

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
            kafka: kafka, regions: regions, apply: apply, http: .init(listen: listen.value),
            log: .init(level: logLevel, format: logFormat), path: file)
        config.verify = try verify.validated(file: file)
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
        let given = dsnFile.value
        if given.isEmpty { throw ConfigError(file: configFile, key: dsnFile.key, message: "must not be empty") }
        let resolved: String
        if given.hasPrefix("/") {
            resolved = given
        } else if let credentials = environment["CREDENTIALS_DIRECTORY"], !credentials.isEmpty {
            resolved = credentials.hasSuffix("/") ? credentials + given : credentials + "/" + given
        } else {
            let directory = configFile.lastIndex(of: "/").map { String(configFile[...$0]) } ?? ""
            resolved = directory + given
        }
        switch readFile(atPath: resolved, limit: 64 * 1024) {
        case .failure(let why):
            throw ConfigError(file: configFile, key: dsnFile.key, message: "cannot read \(resolved): \(why)")
        case .success(let bytes):
            guard let text = String(validating: bytes, as: UTF8.self) else {
                throw ConfigError(file: configFile, key: dsnFile.key, message: "\(resolved) is not valid UTF-8")
            }
            let dsn = text.trimmingCharacters(in: .whitespacesAndNewlines)
            if dsn.isEmpty {
                throw ConfigError(file: configFile, key: dsnFile.key, message: "\(resolved) is empty; expected a DSN")
            }
            return dsn
        }
    }
}
