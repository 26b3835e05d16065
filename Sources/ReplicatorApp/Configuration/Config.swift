public import Logging
public import ReplicationCore

/// The validated configuration of `region-replicator`.
///
/// Loaded from a YAML file (default ``defaultPath``), then overridden by environment
/// variables, then validated (see `Config+Loading.swift`). Every problem is a ``ConfigError``
/// naming the file and the key (or environment variable); no error and no `description` ever
/// contains a DSN or the contents of a `dsn_file`.
///
/// The keys, their defaults and rules, and the environment variables are documented in one
/// place: `docs/configuration.md` (a test checks it against the keys the loader accepts).
public struct ReplicatorConfig: Sendable {
    /// The `kafka` section.
    public struct Kafka: Sendable {
        /// Comma-separated bootstrap broker list (`bootstrap.servers`).
        public var brokers: String
        /// The topic carrying the events.
        public var topic: String
        /// Prefix of each region's consumer group: `<groupPrefix>.<region>`.
        public var groupPrefix: String
        /// Static group membership (KIP-345), opt-in: each region's consumer gets
        /// `group.instance.id` `"<groupInstanceID>.<region>"`. Nil: dynamic membership.
        public var groupInstanceID: String?
        /// Extra librdkafka properties, verbatim. Values may hold secrets (`sasl.password`):
        /// ``ReplicatorConfig/description`` redacts the sensitive ones.
        public var properties: [String: String]

        public init(
            brokers: String = "127.0.0.1:9092", topic: String = "chat.messages",
            groupPrefix: String = "region-replicator", groupInstanceID: String? = nil, properties: [String: String] = [:]
        ) {
            self.brokers = brokers
            self.topic = topic
            self.groupPrefix = groupPrefix
            self.groupInstanceID = groupInstanceID
            self.properties = properties
        }
    }

    /// One region: a name and the DSN of its Postgres.
    public struct Region: Sendable, Hashable {
        /// The region's name, e.g. `eu-west-1` (matches events' `origin_region`).
        public var name: String
        /// libpq conninfo or URI, from `dsn`, `dsn_file` or `REGION_REPLICATOR_REGION_<NAME>_DSN`.
        public var dsn: Secret
        /// `regions[].capture`: overrides `capture.enabled` for this region; nil: it applies.
        public var capture: Bool?

        public init(name: String, dsn: Secret, capture: Bool? = nil) {
            self.name = name
            self.dsn = dsn
            self.capture = capture
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
        /// Apply upserts to their origin region too (see "Apply rules" in docs/events.md).
        public var applyToOrigin: Bool
        /// Event field → column of ``table`` (`apply.columns`, `apply.attributes_column`).
        public var columns: MessageColumns

        /// Most record key + value bytes in one apply transaction (65536…268435456).
        public var maxBatchBytes: Int

        public static let defaultMaxBatchBytes = 8 << 20

        /// Pipelines (each its own consumer in the region's group and its own database
        /// connection) that apply one region's partitions in parallel (1…16).
        public var connections: Int

        public static let defaultConnections = 2

        /// The server's `statement_timeout` for the apply connections, in milliseconds (1000…3600000).
        public var statementTimeoutMs: Int

        public static let defaultStatementTimeoutMs = 60_000

        /// The server's `lock_timeout` for the apply connections, in milliseconds (100…, below
        /// ``statementTimeoutMs``; default 10000, or half the statement timeout when that is shorter).
        public var lockTimeoutMs: Int

        public static func defaultLockTimeoutMs(statementTimeoutMs: Int) -> Int { min(10_000, statementTimeoutMs / 2) }

        public init(table: TableName, maxBatchEvents: Int = 1000, maxBatchDelayMs: Int = 20, applyToOrigin: Bool = false,
                    maxBatchBytes: Int = Apply.defaultMaxBatchBytes, columns: MessageColumns = .standard,
                    connections: Int = Apply.defaultConnections, statementTimeoutMs: Int = Apply.defaultStatementTimeoutMs,
                    lockTimeoutMs: Int? = nil) {
            self.table = table
            self.statementTimeoutMs = statementTimeoutMs
            self.lockTimeoutMs = lockTimeoutMs ?? Apply.defaultLockTimeoutMs(statementTimeoutMs: statementTimeoutMs)
            self.connections = connections
            self.columns = columns
            self.maxBatchEvents = maxBatchEvents
            self.maxBatchDelayMs = maxBatchDelayMs
            self.applyToOrigin = applyToOrigin
            self.maxBatchBytes = maxBatchBytes
        }
    }

    /// The `http` section.
    public struct HTTP: Sendable {
        /// `host:port` to listen on; IPv6 as `[::1]:9466`.
        public var listen: String
        /// `http.fresh_max_wait_ms`: the ceiling of `/fresh`'s `wait_ms` (larger values are cut to it).
        public var freshMaxWaitMs: Int
        /// `http.fresh_max_waiters`: `/fresh` requests waiting at once; beyond, a fast 429.
        public var freshMaxWaiters: Int
        public static let defaultFreshMaxWaitMs = 10_000
        public static let defaultFreshMaxWaiters = 1000

        public init(listen: String = "127.0.0.1:9466", freshMaxWaitMs: Int = defaultFreshMaxWaitMs,
                    freshMaxWaiters: Int = defaultFreshMaxWaiters) {
            self.listen = listen
            self.freshMaxWaitMs = freshMaxWaitMs
            self.freshMaxWaiters = freshMaxWaiters
        }

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
    /// Continuous verification (the `verify` section, off by default).
    public var verify = Verify()
    /// Capture of each region's own writes (the `capture` section, off by default).
    public var capture = Capture()
    /// The file this configuration came from (used in error messages).
    public var path: String

    /// The default configuration file path (`--config` changes it).
    public static let defaultPath = "/etc/region-replicator/config.yaml"

    public init(kafka: Kafka, regions: [Region], apply: Apply, http: HTTP, log: Log, path: String) {
        self.kafka = kafka
        self.regions = regions
        self.apply = apply
        self.http = http
        self.log = log
        self.path = path
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

    /// The static group member id of `region`'s consumer: `"<group_instance_id>.<region>"`, or
    /// nil when `kafka.group_instance_id` is not set.
    public func groupInstanceID(for region: Region) -> String? {
        kafka.groupInstanceID.map { "\($0).\(region.name)" }
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

// MARK: - Redacted descriptions

extension ReplicatorConfig: CustomStringConvertible, CustomDebugStringConvertible {
    /// A one-line summary with DSNs and sensitive Kafka properties redacted.
    public var description: String {
        let regionList = regions.map { "\($0)" }.joined(separator: ", ")
        return "ReplicatorConfig(path: \(path), kafka: \(kafka), regions: [\(regionList)], "
            + "apply: (table: \(apply.table), max_batch_events: \(apply.maxBatchEvents), "
            + "max_batch_delay_ms: \(apply.maxBatchDelayMs), max_batch_bytes: \(apply.maxBatchBytes), apply_to_origin: \(apply.applyToOrigin), connections: \(apply.connections)), "
            + "http: (listen: \(http.listen)), log: (level: \(log.level), format: \(log.format.rawValue)))"
    }

    public var debugDescription: String { description }
}

extension ReplicatorConfig.Kafka: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Property values whose name looks secret (``isSensitive(property:)``) are shown as `<redacted>`.
    public var description: String {
        let props = properties.keys.sorted().map { key in
            "\(key)=\(Self.isSensitive(property: key) ? "<redacted>" : properties[key]!)"
        }
        return "(brokers: \(brokers), topic: \(topic), group_prefix: \(groupPrefix), group_instance_id: \(groupInstanceID ?? "-"), properties: [\(props.joined(separator: ", "))])"
    }

    public var debugDescription: String { description }

    /// `dump(_:)` shows sensitive property values as `<redacted>` too.
    public var customMirror: Mirror {
        let shown = properties.map { ($0.key, Self.isSensitive(property: $0.key) ? "<redacted>" : $0.value) }
        return Mirror(self, children: [
            "brokers": brokers, "topic": topic, "groupPrefix": groupPrefix, "groupInstanceID": groupInstanceID as Any,
            "properties": Dictionary(uniqueKeysWithValues: shown),
        ], displayStyle: .struct)
    }

    /// Parts of a librdkafka property name that mark its value as secret.
    static let sensitivePropertyMarkers = ["password", "secret", "jaas", "oauthbearer.config", "token", ".pem", "key"]

    /// Whether a librdkafka property's value should never be printed: its name contains one of
    /// ``sensitivePropertyMarkers`` (any case) and does not end in `.location` (a path, not the
    /// secret itself). The one list: descriptions, dumps and the output ``Redactor`` use it.
    public static func isSensitive(property name: String) -> Bool {
        let key = name.lowercased()
        if key.hasSuffix(".location") { return false }
        return sensitivePropertyMarkers.contains { key.contains($0) }
    }
}

extension ReplicatorConfig.Region: CustomStringConvertible, CustomDebugStringConvertible {
    public var description: String { "(name: \(name), dsn: <redacted>)" }
    public var debugDescription: String { description }
}
