import Synchronization

/// What the `apply.connections` pipelines (shards) of one region tell each other about leaving
/// their consumer group: how many of them have closed their consumer (sent LeaveGroup).
///
/// A shard about to leave waits until its own consumer has been assigned partitions again after
/// the last sibling left — the group has settled without that sibling — and only then leaves
/// (``RegionPipeline``, bounded by ``settleLimit``). Tansu 0.6 keeps a group's leader when the
/// leader leaves while the group is still re-forming after another member left; a new daemon's
/// members are then told to wait for the departed leader's assignment, and the region gets no
/// partition for minutes. Leaving one after another, each from a settled group, never leaves a
/// departed leader behind. On Kafka and librdkafka's mock cluster it costs at most the time the
/// remaining shards take to rebalance (a heartbeat interval, or the mock's rebalance delay).
public final class ShardDepartures: Sendable {
    /// The longest a shard waits for the group to settle before it leaves anyway.
    public let settleLimit: Duration
    private let departed = Atomic<Int>(0)

    public init(settleLimit: Duration = .seconds(8)) {
        self.settleLimit = settleLimit
    }

    /// How many of the region's shards have closed their consumer so far.
    var count: Int { departed.load(ordering: .acquiring) }

    /// A shard's consumer was closed: it is no longer a member of the group.
    func left() { departed.add(1, ordering: .releasing) }
}
