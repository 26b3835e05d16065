import ReplicationCore
import Yams

extension ReplicatorConfig {
    /// The `verify` section: continuous verification in the daemon (off by default).
    public struct Verify: Sendable, Hashable {
        public var enabled = false
        /// Seconds between two slices (1…86400).
        public var intervalSeconds = 600
        /// Slices of the key space; a full pass takes `slices × intervalSeconds` (1…4096).
        public var slices = 64
        /// Rows and tombstones checksummed per second, all regions together (1000…100000000).
        public var maxItemsPerSecond = 200_000
        /// How long a slice's candidates wait for every region to apply the events in flight (0…3600).
        public var settleTimeoutSeconds = 60

        public init() {}

        var settings: AntiEntropySettings {
            AntiEntropySettings(interval: .seconds(intervalSeconds), slices: slices, maxItemsPerSecond: maxItemsPerSecond,
                                settleTimeout: .seconds(settleTimeoutSeconds))
        }
    }
}

/// What the file said in its `verify` section, type-checked but not yet range-checked.
struct RawVerify {
    var enabled: Sourced<Bool>?
    var ints: [String: Sourced<Int>] = [:]

    static let keys = ["enabled", "interval_seconds", "slices", "max_items_per_second", "settle_timeout_seconds"]
    static let ranges: [String: ClosedRange<Int>] = [
        "interval_seconds": 1...86_400, "slices": 1...4096, "max_items_per_second": 1000...100_000_000,
        "settle_timeout_seconds": 0...3600,
    ]

    mutating func parse(_ node: Node, at key: String, _ walker: YAMLWalker) throws(ConfigError) {
        for e in try walker.entries(of: node, at: key, known: Self.keys) {
            if e.name == "enabled" {
                enabled = Sourced(value: try walker.bool(e.node, at: e.key), key: e.key)
            } else {
                ints[e.name] = Sourced(value: try walker.int(e.node, at: e.key), key: e.key)
            }
        }
    }

    func validated(file: String) throws(ConfigError) -> ReplicatorConfig.Verify {
        var v = ReplicatorConfig.Verify()
        v.enabled = enabled?.value ?? false
        func value(_ name: String, _ defaultValue: Int) throws(ConfigError) -> Int {
            guard let s = ints[name] else { return defaultValue }
            let range = Self.ranges[name]!
            guard range.contains(s.value) else {
                throw ConfigError(file: file, key: s.key, message: "must be between \(range.lowerBound) and \(range.upperBound), got \(s.value)")
            }
            return s.value
        }
        v.intervalSeconds = try value("interval_seconds", v.intervalSeconds)
        v.slices = try value("slices", v.slices)
        v.maxItemsPerSecond = try value("max_items_per_second", v.maxItemsPerSecond)
        v.settleTimeoutSeconds = try value("settle_timeout_seconds", v.settleTimeoutSeconds)
        return v
    }
}
