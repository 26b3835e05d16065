public import PostgresClient

/// One apply transaction built and not sent yet (``RegionApplier/prepare(_:progress:expectedOffsets:consumerGroup:topic:dryRun:)``):
/// its statements as one pipeline, and what reading its outcome needs.
public struct PreparedApply {
    /// `BEGIN`, the locks, the offset check, the plan's statements, the dead letters, the offsets, `COMMIT`.
    public let steps: [PostgresStatement]
    let plan: ApplyPlan
    let work: [RegionApplier.Work]
    /// Where each work's own result is among the results of `steps`.
    let at: [Int]
    let lock: [PostgresStatement]
    let check: [PostgresStatement]
    let records: [DecodedRecord]
    let progress: [PartitionProgress]
    let group: String?
    let topic: String
    let dryRun: Bool
}
