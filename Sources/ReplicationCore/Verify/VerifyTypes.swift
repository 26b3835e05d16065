import Foundation

/// One region to compare.
public struct VerifyTarget: Sendable {
    public var region: String
    /// libpq conninfo (may hold a password; never printed).
    public var conninfo: String
    /// The region's consumer group: its stored offsets say how far it has applied the topic.
    public var consumerGroup: String
    /// The region captures its own writes: a repair marks its transactions with an applier
    /// replication origin (``ApplierOrigin``) so that capture does not publish them.
    public var markApplierOrigin: Bool

    public init(region: String, conninfo: String, consumerGroup: String, markApplierOrigin: Bool = false) {
        self.region = region
        self.conninfo = conninfo
        self.consumerGroup = consumerGroup
        self.markApplierOrigin = markApplierOrigin
    }
}

/// How to compare.
public struct VerifyOptions: Sendable {
    public var schema: VerifySchema
    public var topic: String
    /// How long candidates wait for every region to apply what was in the topic when the first
    /// pass started, before the second pass.
    public var settleTimeout: Duration = .seconds(60)
    /// Only this session's messages and tombstones.
    public var sessionID: String?
    /// The part of the key space to compare (the daemon verifies one slice at a time).
    public var range: KeyRange = .all
    /// Segments of the first level (per range).
    public var firstFanout = 1024
    /// Sub-segments of each differing segment at deeper levels.
    public var fanout = 16
    /// A differing segment with at most this many items (in every region) is fetched row by row.
    public var fetchAtMost: Int64 = 2000
    /// Called after each round of digest queries with the number of items scanned (the daemon's
    /// rate limit sleeps here), outside any transaction: each round then runs in a snapshot of
    /// its own.
    public var pace: (@Sendable (Int64) -> Void)?

    public init(schema: VerifySchema, topic: String) {
        self.schema = schema
        self.topic = topic
    }
}

/// Why a verification could not run.
public struct VerifyError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case regionUnavailable, failed, schemaVersion }
    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

/// What one comparison pass found.
public struct VerifyPass: Sendable {
    public var divergences: [Divergence] = []
    /// The winner of every divergent message id.
    public var truths: [String: MessageTruth] = [:]
    /// What each region held of every divergent message id (a region absent: nothing), for
    /// comparing the passes.
    public var states: [String: [String: MessageState]] = [:]
    /// Items (rows + tombstones) per region in the compared range, from the first level's digests.
    public var items: [String: Int64] = [:]
    public var segmentsCompared = 0
    public var segmentsDiffering = 0
    public var itemsFetched = 0

    /// Message ids and session ids concerned.
    public var messageIDs: [String] { Array(Set(divergences.compactMap(\.messageID))).sorted() }
    public var sessionIDs: [String] {
        Array(Set(divergences.filter { $0.kind == .sessionTombstoneMissing }.map(\.sessionID))).sorted()
    }
}
