import Foundation

/// The next offset to store for one partition after a batch.
public struct PartitionProgress: Sendable, Hashable {
    public var partition: Int32
    public var nextOffset: Int64
    /// Kafka timestamp of the last record of the batch in this partition (ms), if known.
    public var lastRecordMs: Int64?

    public init(partition: Int32, nextOffset: Int64, lastRecordMs: Int64?) {
        self.partition = partition
        self.nextOffset = nextOffset
        self.lastRecordMs = lastRecordMs
    }
}

/// What one apply call did.
public struct ApplyResult: Sendable {
    public var counts = OutcomeCounts()
    /// Kafka timestamps (ms) of the records whose events the database applied.
    public var appliedTimestampsMs: [Int64] = []
    /// Upserts refused because they would change a stored message's session or creation time
    /// (each also counted as `dead_lettered`).
    public var identityChanges = 0

    public init() {}

    mutating func merge(_ other: ApplyResult) {
        counts = counts + other.counts
        appliedTimestampsMs += other.appliedTimestampsMs
        identityChanges += other.identityChanges
    }
}
