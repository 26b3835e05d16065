public import Foundation
public import Logging
public import ReplicationCore
internal import KafkaClient
internal import Yams

/// The validated configuration of `region-replicator` (CONTRACT §7).
///
/// Loaded from a YAML file (default ``defaultPath``), then overridden by environment
/// variables, then validated. Every problem is a ``ConfigError`` naming the file and the key
/// (or environment variable); no error and no `description` ever contains a DSN or the
/// contents of a `dsn_file`.
///
/// ```yaml
/// kafka:
///   brokers: "127.0.0.1:9092"          # comma-separated bootstrap list
///   topic: chat.messages
///   group_prefix: region-replicator    # consumer group per region: "<group_prefix>.<region>"
///   properties: {}                     # extra librdkafka properties, verbatim
/// regions:                             # required, at least one
///   - name: eu-west-1
///     dsn: "host=10.0.0.5 dbname=app user=replicator sslmode=verify-full"
///     # dsn_file: eu-west-1            (instead of dsn)
/// apply:
///   table: messages
///   max_batch_events: 1000
///   max_batch_delay_ms: 20
///   apply_to_origin: false
/// http:
///   listen: "127.0.0.1:9466"
/// log:
///   level: info                        # trace|debug|info|notice|warning|error|critical
///   format: text                       # text|json
/// ```
///
/// ## Keys
///
/// | key | default | rules |
/// |---|---|---|
/// | `kafka.brokers` | `127.0.0.1:9092` | non-empty, comma-separated, no empty entries |
/// | `kafka.topic` | `chat.messages` | a Kafka topic name: 1–249 of `A-Z a-z 0-9 . _ -` |
/// | `kafka.group_prefix` | `region-replicator` | non-empty; the consumer group of a region is `<group_prefix>.<region>` |
/// | `kafka.properties` | `{}` | a mapping of librdkafka property → scalar, passed verbatim as written in the file (`1.0` stays `1.0`, `yes` stays `yes`) |
/// | `regions` | — (required) | a non-empty list of `{name, dsn}` or `{name, dsn_file}` |
/// | `regions[].name` | — (required) | `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`, unique |
/// | `regions[].dsn` | — | libpq conninfo or URI, non-empty |
/// | `regions[].dsn_file` | — | a file holding the DSN (surrounding whitespace trimmed). A relative path is resolved against `$CREDENTIALS_DIRECTORY` when set (systemd `LoadCredential=`), else against the configuration file's directory |
/// | `apply.table` | `messages` | `name` or `schema.name`, each `[A-Za-z_][A-Za-z0-9_]*`, at most 63 bytes |
/// | `apply.max_batch_events` | `1000` | integer, 1…100000 |
/// | `apply.max_batch_delay_ms` | `20` | integer, 0…60000 |
/// | `apply.apply_to_origin` | `false` | boolean |
/// | `http.listen` | `127.0.0.1:9466` | `host:port`, port 1…65535, IPv6 in brackets (`[::1]:9466`) |
/// | `log.level` | `info` | `trace`, `debug`, `info`, `notice`, `warning`, `error`, `critical` |
/// | `log.format` | `text` | `text`, `json` |
///
/// Unknown keys anywhere are errors. A section (`kafka:`, `apply:`, …) left empty (`null`)
/// means all its defaults.
///
/// ## Environment variables
///
/// Applied after the file and before validation; each replaces the file's value.
///
/// | variable | replaces | value |
/// |---|---|---|
/// | `REGION_REPLICATOR_KAFKA_BROKERS` | `kafka.brokers` | comma-separated `host:port` list |
/// | `REGION_REPLICATOR_KAFKA_TOPIC` | `kafka.topic` | topic name |
/// | `REGION_REPLICATOR_KAFKA_GROUP_PREFIX` | `kafka.group_prefix` | string |
/// | `REGION_REPLICATOR_APPLY_TABLE` | `apply.table` | `name` or `schema.name` |
/// | `REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS` | `apply.max_batch_events` | decimal integer, 1…100000 |
/// | `REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS` | `apply.max_batch_delay_ms` | decimal integer, 0…60000 |
/// | `REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN` | `apply.apply_to_origin` | `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`; any case) |
/// | `REGION_REPLICATOR_HTTP_LISTEN` | `http.listen` | `host:port` |
/// | `REGION_REPLICATOR_LOG_LEVEL` | `log.level` | `trace` … `critical` |
/// | `REGION_REPLICATOR_LOG_FORMAT` | `log.format` | `text` or `json` |
/// | `REGION_REPLICATOR_REGION_<NAME>_DSN` | `dsn` / `dsn_file` of region `<NAME>` | libpq conninfo or URI. `<NAME>` is the region name upper-cased with every character other than `A-Z`/`0-9` replaced by `_`: `eu-west-1` → `REGION_REPLICATOR_REGION_EU_WEST_1_DSN` |
/// | `CREDENTIALS_DIRECTORY` | — | set by systemd `LoadCredential=`; relative `dsn_file` paths are resolved against it |
///
/// - A variable that is set counts, even when empty (an empty value is then an error).
/// - A bad value is an error whose key is the variable's name.
/// - A variable starting with `REGION_REPLICATOR_KAFKA_`, `REGION_REPLICATOR_APPLY_`,
///   `REGION_REPLICATOR_HTTP_`, `REGION_REPLICATOR_LOG_` or `REGION_REPLICATOR_REGION_` that is not
///   in this table (a typo), or a region variable matching no configured region, is an error.
///   Other `REGION_REPLICATOR_*` variables are not looked at here.
public struct ReplicatorConfig: Sendable {
    /// The `kafka` section.
    public struct Kafka: Sendable {
        /// Comma-separated bootstrap broker list (`bootstrap.servers`).
        public var brokers: String
        /// The topic carrying the events.
        public var topic: String
        /// Prefix of each region's consumer group: `<groupPrefix>.<region>`.
        public var groupPrefix: String
        /// Extra librdkafka properties, verbatim. Values may hold secrets (`sasl.password`):
        /// ``ReplicatorConfig/description`` redacts the sensitive ones.
        public var properties: [String: String]

        public init(
            brokers: String = "127.0.0.1:9092", topic: String = "chat.messages",
            groupPrefix: String = "region-replicator", properties: [String: String] = [:]
        ) {
            self.brokers = brokers
            self.topic = topic
            self.groupPrefix = groupPrefix
            self.properties = properties
        }
    }

    /// One region: a name and the DSN of its Postgres.
    public struct Region: Sendable, Hashable {
        /// The region's name, e.g. `eu-west-1` (matches events' `origin_region`).
        public var name: String
        /// libpq conninfo or URI, from `dsn`, `dsn_file` or `REGION_REPLICATOR_REGION_<NAME>_DSN`.
        public var dsn: Secret

        public init(name: String, dsn: Secret) {
            self.name = name
            self.dsn = dsn
        }
    }

    /// The `apply` section.
    public struct Apply: Sendable {
        /// The validated (optionally schema-qualified) messages table.
        public var table: TableName
        /// Most events in one apply transaction (1…100000).
        public var maxBatchEvents: Int
        /// Longest wait for a batch to fill, in milliseconds (0…60000).
        public var maxBatchDelayMs: Int
        /// Apply upserts to their origin region too (CONTRACT §3).
        public var applyToOrigin: Bool

        public init(table: TableName, maxBatchEvents: Int = 1000, maxBatchDelayMs: Int = 20, applyToOrigin: Bool = false) {
            self.table = table
            self.maxBatchEvents = maxBatchEvents
            self.maxBatchDelayMs = maxBatchDelayMs
            self.applyToOrigin = applyToOrigin
        }
    }

    /// The `http` section.
    public struct HTTP: Sendable {
        /// `host:port` to listen on; IPv6 as `[::1]:9466`.
        public var listen: String

        public init(listen: String = "127.0.0.1:9466") { self.listen = listen }

        /// ``listen`` split into host (IPv6 without brackets) and port; `nil` if malformed
        /// (never for a loaded configuration, which is validated).
        public var hostAndPort: (host: String, port: Int)? { ReplicatorConfig.splitListen(listen) }
    }

    /// `log.format`.
    public enum LogFormat: String, Sendable, CaseIterable {
        case text, json
    }

    /// The `log` section.
    public struct Log: Sendable {
        public var level: Logger.Level
        public var format: LogFormat

        public init(level: Logger.Level = .info, format: LogFormat = .text) {
            self.level = level
            self.format = format
        }
    }

    public var kafka: Kafka
    /// At least one region, names unique, in file order.
    public var regions: [Region]
    public var apply: Apply
    public var http: HTTP
    public var log: Log
    /// Continuous verification (off by default).
    public var verify = Verify()
    /// The file this configuration came from (used in error messages).
    public var path: String

    /// The default configuration file path (CONTRACT §6).
    public static let defaultPath = "/etc/region-replicator/config.yaml"

    public init(kafka: Kafka, regions: [Region], apply: Apply, http: HTTP, log: Log, path: String) {
        self.kafka = kafka
        self.regions = regions
        self.apply = apply
        self.http = http
        self.log = log
        self.path = path
    }

    /// Reads, parses, overrides (from `environment`) and validates the file at `path`.
    /// - Throws: ``ConfigError``; a missing or unreadable file gives
    ///   `<path>: cannot read configuration file: <strerror>`.
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> ReplicatorConfig {
        let text: String
        switch readFile(atPath: path, limit: 16 << 20) {
        case .success(let bytes):
            guard let decoded = String(validating: bytes, as: UTF8.self) else {
                throw ConfigError(file: path, key: nil, message: "cannot read configuration file: not valid UTF-8")
            }
            text = decoded
        case .failure(let failure):
            throw ConfigError(file: path, key: nil, message: "cannot read configuration file: \(failure)")
        }
        return try parse(yaml: text, path: path, environment: environment)
    }

    /// Parses `yaml` as if read from `path` (used in errors and to resolve relative `dsn_file`
    /// paths), applies the overrides from `environment`, and validates.
    public static func parse(yaml: String, path: String, environment: [String: String]) throws(ConfigError) -> ReplicatorConfig {
        var raw = try RawConfig.parse(yaml: yaml, file: path)
        try raw.applyEnvironment(environment, file: path)
        return try raw.validated(file: path, environment: environment)
    }

    /// The configured region called `name`.
    /// - Throws: ``ConfigError`` (key `nil`) listing the configured regions.
    public func region(named name: String) throws(ConfigError) -> Region {
        if let region = regions.first(where: { $0.name == name }) { return region }
        let known = regions.map(\.name).joined(separator: ", ")
        throw ConfigError(file: path, key: nil, message: "unknown region \(quoted(name)) (configured regions: \(known))")
    }

    /// The Kafka consumer group of `region`: `"<group_prefix>.<region>"`.
    public func consumerGroup(for region: Region) -> String {
        "\(kafka.groupPrefix).\(region.name)"
    }

    /// The environment variable that overrides the DSN of the region called `regionName`:
    /// `REGION_REPLICATOR_REGION_<NAME>_DSN`, `<NAME>` upper-cased with every character other
    /// than `A-Z`/`0-9` replaced by `_`.
    public static func dsnEnvironmentVariable(forRegion regionName: String) -> String {
        let name = String(String.UnicodeScalarView(regionName.unicodeScalars.map { scalar -> Unicode.Scalar in
            switch scalar.value {
            case 0x30...0x39, 0x41...0x5A: return scalar
            case 0x61...0x7A: return Unicode.Scalar(scalar.value - 0x20)!
            default: return "_"
            }
        }))
        return "REGION_REPLICATOR_REGION_\(name)_DSN"
    }
}

/// A secret string (a DSN: it holds a password).
///
/// `description`, `debugDescription` and its mirror never show the value, so interpolating a
/// configuration into a log line or an error is safe. ``value`` gives it.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself. Never log it.
    public let value: String

    public init(_ value: String) { self.value = value }

    /// `<redacted>`.
    public var description: String { "<redacted>" }
    /// `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// No children, so `dump(_:)` does not show the value either.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// A configuration problem: which file, which key (a YAML key path such as `regions[1].dsn`,
/// or an environment variable name) and what is wrong. Never contains a secret.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    /// The configuration file.
    public var file: String
    /// The key path (`apply.max_batch_events`, `regions[0].dsn_file`) or environment variable
    /// (`REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS`); `nil` for the file as a whole.
    public var key: String?
    /// What is wrong.
    public var message: String

    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    /// `<file>: <key>: <message>`, or `<file>: <message>` without a key.
    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

// MARK: - Redacted descriptions

extension ReplicatorConfig: CustomStringConvertible, CustomDebugStringConvertible {
    /// A one-line summary with DSNs and sensitive Kafka properties redacted.
    public var description: String {
        let regionList = regions.map { "\($0)" }.joined(separator: ", ")
        return "ReplicatorConfig(path: \(path), kafka: \(kafka), regions: [\(regionList)], "
            + "apply: (table: \(apply.table), max_batch_events: \(apply.maxBatchEvents), "
            + "max_batch_delay_ms: \(apply.maxBatchDelayMs), apply_to_origin: \(apply.applyToOrigin)), "
            + "http: (listen: \(http.listen)), log: (level: \(log.level), format: \(log.format.rawValue)))"
    }

    public var debugDescription: String { description }
}

extension ReplicatorConfig.Kafka: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Property values whose name looks secret (`*password*`, `*secret*`, `*jaas*`,
    /// `*oauthbearer.config*`, `*.pem`, `*key*` except `*.location`) are shown as `<redacted>`.
    public var description: String {
        let props = properties.keys.sorted().map { key in
            "\(key)=\(Self.isSensitive(property: key) ? "<redacted>" : properties[key]!)"
        }
        return "(brokers: \(brokers), topic: \(topic), group_prefix: \(groupPrefix), properties: [\(props.joined(separator: ", "))])"
    }

    public var debugDescription: String { description }

    /// `dump(_:)` shows sensitive property values as `<redacted>` too.
    public var customMirror: Mirror {
        let shown = properties.map { ($0.key, Self.isSensitive(property: $0.key) ? "<redacted>" : $0.value) }
        return Mirror(self, children: [
            "brokers": brokers, "topic": topic, "groupPrefix": groupPrefix,
            "properties": Dictionary(uniqueKeysWithValues: shown),
        ], displayStyle: .struct)
    }

    /// Whether a librdkafka property's value should never be printed.
    public static func isSensitive(property name: String) -> Bool {
        let key = name.lowercased()
        if key.hasSuffix(".location") { return false }  // a path, not the secret itself
        return ["password", "secret", "jaas", "oauthbearer.config", ".pem", "key"].contains { key.contains($0) }
    }
}

extension ReplicatorConfig.Region: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "(name: \(name), dsn: <redacted>)" }
    public var debugDescription: String { description }
}

// MARK: - Helpers

/// `"value"` with escapes, truncated to 60 characters. Never use it on a secret.
func quoted(_ value: String) -> String {
    let shown = value.count > 60 ? String(value.prefix(60)) + "…" : value
    return shown.debugDescription
}

/// Why a file could not be read: strerror text or another short reason (no contents).
struct ReadFailure: Error, CustomStringConvertible {
    var description: String
}

/// Reads at most `limit` bytes of a regular file.
func readFile(atPath path: String, limit: Int) -> Result<[UInt8], ReadFailure> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return .failure(ReadFailure(description: String(cString: strerror(errno)))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(ReadFailure(description: String(cString: strerror(errno))))
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > limit { return .failure(ReadFailure(description: "larger than \(limit) bytes")) }
    }
    return .success(bytes)
}

extension ReplicatorConfig {
    /// Splits and validates `host:port` (IPv6 in brackets).
    static func splitListen(_ text: String) -> (host: String, port: Int)? {
        if case .success(let pair) = checkListen(text) { return pair }
        return nil
    }

    /// Why `text` is not a valid `host:port`, or the split pair.
    static func checkListen(_ text: String) -> Result<(host: String, port: Int), ReadFailure> {
        func fail(_ why: String) -> Result<(host: String, port: Int), ReadFailure> { .failure(ReadFailure(description: why)) }
        let form = "expected host:port such as 127.0.0.1:9466, 0.0.0.0:9466 or [::1]:9466"
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return fail("\(form), got \(quoted(text))") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.first == ":" else { return fail("\(form), got \(quoted(text))") }
            port = rest.dropFirst()
            let parts = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            let address = parts[0]
            let addressOK = address.contains(":") && address.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            let zoneOK = parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
            guard addressOK && zoneOK else { return fail("invalid IPv6 address in \(quoted(text))") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return fail("\(form), got \(quoted(text))") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return fail("IPv6 addresses must be in brackets, e.g. [::1]:9466, got \(quoted(text))") }
            if host.isEmpty { return fail("the host is missing (use 0.0.0.0:\(port) for all interfaces), got \(quoted(text))") }
            guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) else {
                return fail("invalid host in \(quoted(text))")
            }
        }
        guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port), (1...65535).contains(number) else {
            return fail("the port must be a number from 1 to 65535, got \(quoted(text))")
        }
        return .success((String(host), number))
    }
}

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
    var properties: [String: String] = [:]
    var regions: Sourced<[RawRegion]>?
    var table: Sourced<String>?
    var maxBatchEvents: Sourced<Int>?
    var maxBatchDelayMs: Sourced<Int>?
    var applyToOrigin: Sourced<Bool>?
    var listen: Sourced<String>?
    var level: Sourced<String>?
    var format: Sourced<String>?
    var verify = RawVerify()

    static let topKeys = ["kafka", "regions", "apply", "http", "log", "verify"]
    static let kafkaKeys = ["brokers", "topic", "group_prefix", "properties"]

    /// librdkafka properties the replication guarantees depend on (offsets live in each region's
    /// database and are committed to Kafka only after the database commit).
    static let managedKafkaProperties: [String: String] = [
        "group.id": "each region's group is \"<group_prefix>.<region>\" (set kafka.group_prefix)",
        "enable.auto.commit": "offsets are committed after each region's database commit",
        "enable.auto.offset.store": "offsets are stored after each region's database commit",
        "bootstrap.servers": "set kafka.brokers",
        "metadata.broker.list": "set kafka.brokers",
    ]
    static let regionKeys = ["name", "dsn", "dsn_file"]
    static let applyKeys = ["table", "max_batch_events", "max_batch_delay_ms", "apply_to_origin"]
    static let httpKeys = ["listen"]
    static let logKeys = ["level", "format"]

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
        let kafka = ReplicatorConfig.Kafka(
            brokers: brokers.value, topic: topic.value, groupPrefix: groupPrefix.value, properties: properties)

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
        let apply = ReplicatorConfig.Apply(
            table: tableName, maxBatchEvents: maxBatchEvents, maxBatchDelayMs: maxBatchDelayMs,
            applyToOrigin: applyToOrigin?.value ?? false)

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

// MARK: - Walking Yams nodes

/// Walks a composed YAML tree, producing errors that carry the full key path.
struct YAMLWalker {
    let file: String

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, key: key.isEmpty ? nil : key, message: message)
    }

    static func join(_ parent: String, _ child: String) -> String {
        parent.isEmpty ? child : "\(parent).\(child)"
    }

    /// The entries of a mapping, each with its full key path; unknown keys are errors.
    /// A `null` node is an empty mapping when `nullIsEmpty`.
    func entries(
        of node: Node, at key: String, known: [String], nullIsEmpty: Bool = true
    ) throws(ConfigError) -> [(name: String, key: String, node: Node)] {
        if nullIsEmpty && node.isNullScalar { return [] }
        guard case .mapping(let mapping) = node else {
            throw error(key, "expected a mapping (with keys \(known.joined(separator: ", "))), got \(Self.kind(of: node))")
        }
        var result: [(name: String, key: String, node: Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                throw error(key, "keys must be strings, got \(Self.kind(of: keyNode)) as a key")
            }
            let path = Self.join(key, scalar.string)
            guard known.contains(scalar.string) else {
                throw error(path, "unknown key (known keys: \(known.joined(separator: ", ")))")
            }
            result.append((scalar.string, path, value))
        }
        return result
    }

    /// Any non-null scalar, as written. Errors never show the value (it may be a DSN).
    func string(_ node: Node, at key: String) throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected a string, got \(Self.kind(of: node))")
        }
        return scalar.string
    }

    /// A plain decimal integer (`_` separators allowed).
    func int(_ node: Node, at key: String) throws(ConfigError) -> Int {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected an integer, got \(Self.kind(of: node))")
        }
        if scalar.style == .plain || scalar.style == .any, let value = Self.decimal(scalar.string) { return value }
        throw error(key, "expected an integer, got \(quoted(scalar.string))")
    }

    /// `true`/`false` (YAML 1.1 `yes`/`no`/`on`/`off` too), unquoted.
    func bool(_ node: Node, at key: String) throws(ConfigError) -> Bool {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected a boolean (true or false), got \(Self.kind(of: node))")
        }
        if node.tagName == .bool, let value = Bool.construct(from: scalar) { return value }
        throw error(key, "expected a boolean (true or false), got \(quoted(scalar.string))")
    }

    static func decimal(_ text: String) -> Int? {
        var digits = Substring(text)
        var sign = ""
        if let first = digits.first, first == "+" || first == "-" {
            sign = first == "-" ? "-" : ""
            digits = digits.dropFirst()
        }
        guard let first = digits.first, first.isASCII, first.isNumber,
              digits.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "_" })
        else { return nil }
        return Int(sign + digits.filter { $0 != "_" })
    }

    static func kind(of node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .alias: return "an alias"
        case .scalar:
            switch node.tagName {
            case .null: return "null"
            case .bool: return "a boolean"
            case .int: return "an integer"
            case .float: return "a number"
            case .timestamp: return "a timestamp"
            default: return "a string"
            }
        }
    }

    /// Yams' error without its source snippet (the snippet may show a DSN).
    static func describe(_ error: YamlError) -> String {
        func at(_ mark: Mark) -> String { "line \(mark.line), column \(mark.column)" }
        func context(_ context: YamlError.Context?) -> String {
            guard let context else { return "" }
            return " (\(context.text) at \(at(context.mark)))"
        }
        switch error {
        case let .scanner(ctx, problem, mark, _), let .parser(ctx, problem, mark, _), let .composer(ctx, problem, mark, _):
            return "invalid YAML at \(at(mark)): \(problem)\(context(ctx))"
        case let .reader(problem, offset, _, yaml):
            guard let offset else { return "invalid YAML: \(problem)" }
            // Yams gives the offset in Characters.
            let before = yaml.prefix(offset)
            let line = before.reduce(1) { $1.isNewline ? $0 + 1 : $0 }
            let lineStart = before.lastIndex(where: \.isNewline).map { before.index(after: $0) } ?? before.startIndex
            let column = before[lineStart...].count + 1
            return "invalid YAML at line \(line), column \(column): \(problem)"
        case let .duplicatedKeysInMapping(duplicates, ctx):
            // ctx.text is the whole document: never print it.
            let keys = duplicates.sorted().map { quoted($0) }.joined(separator: ", ")
            return "invalid YAML at \(at(ctx.mark)): duplicate key \(keys) in one mapping"
        case .dataCouldNotBeDecoded:
            return "invalid YAML: cannot decode the text"
        default:
            return "invalid YAML"
        }
    }
}

extension Node {
    /// The resolved tag (`.str`, `.int`, `.bool`, `.null`, …; Yams keeps `Tag.name` internal).
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }

    /// A `null` scalar (`~`, `null`, or nothing after the colon).
    var isNullScalar: Bool {
        if case .scalar = self { return tagName == .null }
        return false
    }
}
