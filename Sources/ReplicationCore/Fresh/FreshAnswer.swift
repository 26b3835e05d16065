import Foundation

/// One region's place in the `/fresh` question (docs/metrics.md).
public struct FreshRegion: Sendable {
    public var name: String
    public var conninfo: String
    public var table: TableName
    public var consumerGroup: String
    /// The region publishes its own local writes from this logical replication slot (capture;
    /// nil: it does not capture). A token-less answer for any other region waits until the slot
    /// confirmed the region's WAL position read after the question arrived.
    public var captureSlot: String?

    public var capturing: Bool { captureSlot != nil }

    public init(name: String, conninfo: String, table: TableName, consumerGroup: String, captureSlot: String?) {
        self.name = name
        self.conninfo = conninfo
        self.table = table
        self.consumerGroup = consumerGroup
        self.captureSlot = captureSlot
    }
}

/// Why a region is not fresh.
public enum FreshReason: String, Sendable, Codable, CaseIterable {
    /// It has not applied everything it is asked about yet (see `missing`).
    case behind
    /// Its database does not answer (or has not answered yet).
    case regionDown = "region_down"
    /// The broker could not be asked for the topic's end offsets.
    case brokerUnavailable = "broker_unavailable"
    /// A record it is asked about was dead-lettered there (not applied; retry or resolve it).
    case deadLettered = "dead_lettered"
    /// Retention deleted a record it is asked about before it could be confirmed applied.
    case expired
    /// Another region captures its local writes, and its capture has not had Kafka acknowledge
    /// the writes committed there before the question arrived (slot not streaming, lost, or slow).
    case captureBehind = "capture_behind"
    /// Another region captures its local writes, and its database does not answer: its writes
    /// before the question cannot be confirmed on the topic.
    case originDown = "origin_down"
    /// The token is of another cluster or topic, or names a partition the topic lacks.
    case foreignToken = "foreign_token"
    /// Too many requests are waiting already (`http.fresh_max_waiters`).
    case overloaded
}

/// The answer for one region.
public struct FreshAnswer: Sendable, Equatable {
    public var region: String
    public var fresh: Bool
    public var waitedMs: Int64
    public var reason: FreshReason?
    /// Detail for a person (the database's or broker's error, …).
    public var problem: String?
    /// Events per partition the region lacks (behind, dead-lettered or expired).
    public var missing: [Int32: Int64]
    /// The question was about one write (a session token), not the whole topic.
    public var token: Bool

    public init(region: String, fresh: Bool, waitedMs: Int64, reason: FreshReason?, problem: String?,
                missing: [Int32: Int64], token: Bool) {
        self.region = region
        self.fresh = fresh
        self.waitedMs = waitedMs
        self.reason = reason
        self.problem = problem
        self.missing = missing
        self.token = token
    }
}

/// What the oracle knows, and the rule that turns it into a verdict (pure: unit-tested).
enum FreshJudgement {
    /// One watermark query, sent after the waiters it serves arrived.
    struct Round: Sendable {
        /// Last stable offset (read_committed end offset) per partition.
        var end: [Int32: Int64]
        var low: [Int32: Int64]
        var scope: UInt64
    }

    /// One read of a region's committed state.
    struct RegionRead: Sendable {
        var next: [Int32: Int64]
        /// Unresolved dead-lettered offsets per partition.
        var deadLetters: [Int32: Set<Int64>]
        var problem: String?
    }

    enum Verdict: Equatable {
        case fresh
        /// Not yet: may change by waiting.
        case wait(FreshReason, String?, [Int32: Int64])
        /// Not fresh, and waiting will not change it.
        case final(FreshReason, String?, [Int32: Int64])
    }

    static func verdict(token: FreshToken?, round: Round?, read: RegionRead?, brokerProblem: String?) -> Verdict {
        guard let round else {
            return .wait(brokerProblem == nil ? .behind : .brokerUnavailable,
                         brokerProblem ?? "the topic's end offsets are not read yet", [:])
        }
        if let token {
            guard token.scope == round.scope else {
                return .final(.foreignToken, "the token is of another cluster or topic", [:])
            }
            guard round.end[token.partition] != nil else {
                return .final(.foreignToken, "the topic has no partition \(token.partition)", [:])
            }
        }
        guard let read, read.problem == nil else {
            return .wait(.regionDown, read?.problem ?? "the region's database has not answered yet", [:])
        }
        if let token {
            let p = token.partition
            let stored = read.next[p] ?? 0
            if read.deadLetters[p]?.contains(token.offset) == true {
                return .final(.deadLettered, "the write was dead-lettered in this region", [p: 1])
            }
            if token.offset < round.low[p] ?? 0 {
                return .final(.expired, "retention deleted the write; the region cannot be confirmed to hold it", [p: 1])
            }
            if stored > token.offset { return .fresh }
            return .wait(.behind, nil, [p: token.offset.saturatingAdding(1).saturatingSubtracting(stored)])
        }
        var behind: [Int32: Int64] = [:]
        var dead: [Int32: Int64] = [:]
        var expired: [Int32: Int64] = [:]
        for (p, end) in round.end {
            let stored = read.next[p] ?? 0
            let low = round.low[p] ?? 0
            if stored < low { expired[p] = min(low, end).saturatingSubtracting(stored) }
            if stored < end { behind[p] = end.saturatingSubtracting(stored) }
            let holes = read.deadLetters[p]?.count { $0 < end } ?? 0
            if holes > 0 { dead[p] = Int64(holes) }
        }
        if !dead.isEmpty { return .final(.deadLettered, "dead-lettered records are not applied in this region", dead) }
        if !expired.isEmpty {
            return .final(.expired, "retention deleted records before this region applied them", expired)
        }
        if !behind.isEmpty { return .wait(.behind, nil, behind) }
        return .fresh
    }
}
