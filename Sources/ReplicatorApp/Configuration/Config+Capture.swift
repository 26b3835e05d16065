import ReplicationCore
import Yams

extension ReplicatorConfig {
    /// The `capture` section: publish each region's own writes from its Postgres log
    /// (experimental, off by default).
    public struct Capture: Sendable, Hashable {
        /// Capture every region (each region's `capture` overrides it).
        public var enabled = false
        /// Each capturing region's slot is `<slotPrefix>_<region>` (``slotName(for:)``).
        public var slotPrefix = "region_replicator"
        /// The publication of the messages table in each capturing region's database.
        public var publication = "region_replicator"

        public init() {}

        /// `<slot_prefix>_<region>`, the region's name lower-cased with every character other
        /// than `a-z`/`0-9` replaced by `_` (`eu-west-1` → `region_replicator_eu_west_1`).
        public func slotName(for region: String) -> String {
            slotPrefix + "_" + String(String.UnicodeScalarView(region.lowercased().unicodeScalars.map {
                ($0.value >= 0x61 && $0.value <= 0x7A) || ($0.value >= 0x30 && $0.value <= 0x39) ? $0 : "_"
            }))
        }
    }

    /// Whether `region` publishes its own writes (its `capture`, else `capture.enabled`).
    public func captures(_ region: Region) -> Bool { region.capture ?? capture.enabled }
}

/// What the file said in its `capture` section, type-checked but not yet validated.
struct RawCapture {
    var enabled: Sourced<Bool>?
    var slotPrefix: Sourced<String>?
    var publication: Sourced<String>?

    static let keys = ["enabled", "slot_prefix", "publication"]

    mutating func parse(_ node: Node, at key: String, _ walker: YAMLWalker) throws(ConfigError) {
        for e in try walker.entries(of: node, at: key, known: Self.keys) {
            switch e.name {
            case "enabled": enabled = Sourced(value: try walker.bool(e.node, at: e.key), key: e.key)
            case "slot_prefix": slotPrefix = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            default: publication = Sourced(value: try walker.string(e.node, at: e.key), key: e.key)
            }
        }
    }

    func validated(file: String, regions: [ReplicatorConfig.Region]) throws(ConfigError) -> ReplicatorConfig.Capture {
        var c = ReplicatorConfig.Capture()
        c.enabled = enabled?.value ?? false
        if let p = slotPrefix {
            let ok = !p.value.isEmpty && p.value.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
            guard ok else {
                throw ConfigError(file: file, key: p.key, message: "invalid slot prefix \(quoted(p.value)): only a-z, 0-9 and '_' (a replication slot name)")
            }
            c.slotPrefix = p.value
        }
        for r in regions where (r.capture ?? c.enabled) && c.slotName(for: r.name).utf8.count > 63 {
            throw ConfigError(file: file, key: slotPrefix?.key ?? "capture.slot_prefix",
                              message: "the replication slot of region \(r.name), \(c.slotName(for: r.name)), is longer than 63 bytes: choose a shorter prefix")
        }
        if let p = publication {
            do {
                try MessageColumns.validate(p.value)
            } catch {
                throw ConfigError(file: file, key: p.key, message: "invalid publication name \(quoted(p.value)): \(error.problem)")
            }
            c.publication = p.value
        }
        return c
    }
}
