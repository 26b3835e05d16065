/// Per-outcome event counts.
public struct OutcomeCounts: Sendable, Hashable, CustomStringConvertible {
    public private(set) var counts: [ApplyOutcome: Int] = [:]
    public init() {}
    public subscript(_ o: ApplyOutcome) -> Int {
        get { counts[o, default: 0] }
        set { counts[o] = newValue }
    }
    public var total: Int { counts.values.reduce(0, +) }
    public static func + (a: OutcomeCounts, b: OutcomeCounts) -> OutcomeCounts {
        var r = a
        for (k, v) in b.counts { r[k] += v }
        return r
    }
    public var description: String {
        ApplyOutcome.allCases.map { "\($0.rawValue)=\(self[$0])" }.joined(separator: " ")
    }
}
