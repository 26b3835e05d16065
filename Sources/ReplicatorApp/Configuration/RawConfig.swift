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
        var capture: Sourced<Bool>?
    }

    var brokers: Sourced<String>?
    var topic: Sourced<String>?
    var groupPrefix: Sourced<String>?
    var groupInstanceID: Sourced<String>?
    var properties: [String: String] = [:]
    /// `kafka.sasl_password_file`, `kafka.ssl_key_password_file`: files holding secrets.
    var saslPasswordFile: Sourced<String>?
    var sslKeyPasswordFile: Sourced<String>?
    var regions: Sourced<[RawRegion]>?
    var table: Sourced<String>?
    var maxBatchEvents: Sourced<Int>?
    var maxBatchDelayMs: Sourced<Int>?
    var maxBatchBytes: Sourced<Int>?
    var connections: Sourced<Int>?
    var statementTimeoutMs: Sourced<Int>?
    var lockTimeoutMs: Sourced<Int>?
    var applyToOrigin: Sourced<Bool>?
    var columns: [String: Sourced<String>] = [:]
    var columnsKey: String?
    /// `apply.columns.replicated_at: null`: the table has no such column.
    var noReplicatedAt = false
    var attributesColumn: Sourced<String>?
    var listen: Sourced<String>?
    var freshMaxWaitMs: Sourced<Int>?
    var freshMaxWaiters: Sourced<Int>?
    var level: Sourced<String>?
    var format: Sourced<String>?
    var verify = RawVerify()
    var capture = RawCapture()

    static let topKeys = ["kafka", "regions", "apply", "http", "log", "verify", "capture"]
    static let kafkaKeys = ["brokers", "topic", "group_prefix", "group_instance_id", "sasl_password_file",
                            "ssl_key_password_file", "properties"]

    /// Secret librdkafka properties that come from a file (a systemd credential), never from the
    /// configuration file itself: the property and the key naming its file.
    static let secretKafkaProperties: [String: String] = [
        "sasl.password": "kafka.sasl_password_file",
        "ssl.key.password": "kafka.ssl_key_password_file",
    ]

    /// librdkafka properties the replication guarantees depend on (offsets live in each region's
    /// database and are committed to Kafka only after the database commit).
    static let managedKafkaProperties: [String: String] = [
        "group.id": "each region's group is \"<group_prefix>.<region>\" (set kafka.group_prefix)",
        "group.instance.id": "each region's consumer gets \"<group_instance_id>.<region>\" (set kafka.group_instance_id)",
        "enable.auto.commit": "offsets are committed after each region's database commit",
        "enable.auto.offset.store": "offsets are stored after each region's database commit",
        "isolation.level": "only committed transactional records are applied (read_committed)",
        "enable.partition.eof": "each region's consumer needs the ends of partitions to store offsets past transaction markers",
        "bootstrap.servers": "set kafka.brokers",
        "metadata.broker.list": "set kafka.brokers",
    ]
    static let regionKeys = ["name", "dsn", "dsn_file", "capture"]
    static let applyKeys = ["table", "max_batch_events", "max_batch_delay_ms", "max_batch_bytes", "apply_to_origin",
                            "columns", "attributes_column", "connections", "statement_timeout_ms", "lock_timeout_ms"]
    static let httpKeys = ["listen", "fresh_max_wait_ms", "fresh_max_waiters"]
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
        case "capture": RawCapture.keys
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
                    case "statement_timeout_ms": raw.statementTimeoutMs = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "lock_timeout_ms": raw.lockTimeoutMs = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
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
            case "capture": try raw.capture.parse(entry.node, at: entry.key, walker)
            case "http":
                for e in try walker.entries(of: entry.node, at: entry.key, known: httpKeys) {
                    switch e.name {
                    case "fresh_max_wait_ms": raw.freshMaxWaitMs = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    case "fresh_max_waiters": raw.freshMaxWaiters = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
                    default: raw.listen = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                    }
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
            case "sasl_password_file": saslPasswordFile = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            case "ssl_key_password_file": sslKeyPasswordFile = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
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
                    if let fileKey = Self.secretKafkaProperties[keyScalar.string] {
                        throw walker.error(propertyKey, "a secret does not belong in the configuration file: put it in a file "
                            + "of its own (a systemd credential) and name that file in \(fileKey)")
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
            var capture: Sourced<Bool>?
            for e in try walker.entries(of: item, at: itemKey, known: Self.regionKeys, nullIsEmpty: false) {
                switch e.name {
                case "name": name = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                case "dsn": dsn = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
                case "capture": capture = Sourced(value: try walker.bool(e.node, at: e.key), key: e.key)
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
            items.append(RawRegion(key: itemKey, name: name.value, nameKey: name.key, dsn: source, envDSN: nil, capture: capture))
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
}
