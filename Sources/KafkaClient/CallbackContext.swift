import Synchronization

/// What the C callbacks need; lives as long as the handle.
final class CallbackContext: @unchecked Sendable {
    // @unchecked Sendable: immutable after init but for two atomics; the closures are @Sendable.
    let rebalance: KafkaConsumer.RebalanceHandler?
    let pauseAssigned: Bool
    let log: KafkaConsumer.LogHandler?
    /// The consumer subscribed (group mode), and was given partitions at least once.
    let subscribed = Atomic<Bool>(false)
    let everAssigned = Atomic<Bool>(false)
    init(rebalance: KafkaConsumer.RebalanceHandler?, pauseAssigned: Bool, log: KafkaConsumer.LogHandler?) {
        self.rebalance = rebalance
        self.pauseAssigned = pauseAssigned
        self.log = log
    }
}
