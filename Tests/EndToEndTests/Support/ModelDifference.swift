import Foundation

/// How a region's rows differ from the model: rows missing, rows that should not be there, and
/// rows present with other content. Seed-style rows (no message id) are keyed by their content.
struct ModelDifference: CustomStringConvertible {
    var region: String
    var missing = 0
    var extra = 0
    var wrong = 0
    var examples: [String] = []

    var isEmpty: Bool { missing == 0 && extra == 0 && wrong == 0 }
    var description: String {
        "region \(region): rows missing=\(missing) extra=\(extra) wrong=\(wrong)" + (examples.isEmpty ? "" : " (e.g. \(examples.prefix(3)))")
    }

    /// `h`'s rows in `region` against `expected` (the model's rows for that region).
    init(_ h: Harness, region: String, expected: [Workload.Row]) throws {
        self.region = region
        func key(_ row: Workload.Row) -> String { row.messageID == "seed" ? "seed|" + row.content : row.messageID }
        let actual = Dictionary(try h.rows(region).map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        let wanted = Dictionary(expected.map { (key($0), $0) }, uniquingKeysWith: { a, _ in a })
        let missingKeys = Set(wanted.keys).subtracting(actual.keys)
        let extraKeys = Set(actual.keys).subtracting(wanted.keys)
        let wrongKeys = wanted.keys.filter { k in actual[k].map { $0 != wanted[k] } ?? false }
        missing = missingKeys.count
        extra = extraKeys.count
        wrong = wrongKeys.count
        examples = missingKeys.sorted().prefix(2).map { "missing \($0)" } + extraKeys.sorted().prefix(2).map { "extra \($0)" }
            + wrongKeys.sorted().prefix(2).map { "wrong \($0)" }
    }

    /// Every region of `h` against the workload's model.
    static func all(_ h: Harness, _ w: Workload) throws -> [ModelDifference] {
        try h.regions.map { try ModelDifference(h, region: $0, expected: w.expectedRows(in: $0)) }
    }
}

extension Harness {
    /// Adds a librdkafka property to the configuration file (for daemons started afterwards).
    func setKafkaProperty(_ name: String, _ value: String) throws {
        let anchor = "    heartbeat.interval.ms: \"500\"\n"
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        guard text.contains(anchor) else { throw TestSetupError("no kafka.properties block in \(configPath)") }
        try text.replacingOccurrences(of: anchor, with: anchor + "    \(name): \"\(value)\"\n")
            .write(toFile: configPath, atomically: true, encoding: .utf8)
    }

    /// Σ of `region`'s stored next offsets.
    func storedTotal(_ region: String) throws -> Int64 { try storedOffsets(region).values.reduce(0, +) }
}

extension Workload {
    /// The events as records for a ``RateProducer``.
    var records: [RateProducer.Record] {
        events.map { RateProducer.Record(key: $0.key, value: Array(try! JSONSerialization.data(withJSONObject: $0.json))) }
    }
}
