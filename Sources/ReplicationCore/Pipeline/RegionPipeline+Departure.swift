import Foundation
import KafkaClient
import Logging

// Leaving the consumer group when the region has several shards (``ShardDepartures``).
extension RegionPipeline {
    /// Before the consumer is closed (and leaves the group): when another shard of the region
    /// left since this one was last assigned partitions, keeps serving the consumer (group
    /// heartbeats and the rebalance that follows the departure; no records are applied) until
    /// it is assigned again — the group settled without that shard — or the settle limit passes.
    func settleBeforeLeaving(_ consumer: KafkaConsumer) {
        guard let departures, departures.count > departuresAtAssignment else { return }
        let started = ContinuousClock.now
        let deadline = started.advanced(by: departures.settleLimit)
        while departures.count > departuresAtAssignment && ContinuousClock.now < deadline {
            heartbeat()
            // Records polled here are not applied: they are re-read after the restart.
            _ = consumer.pollBatch(maxRecords: 100, timeoutMs: 100)
        }
        let settled = departures.count <= departuresAtAssignment
        logger.log(level: settled ? .info : .warning,
                   settled ? "group settled after another shard of the region left: leaving it"
                           : "group not settled after another shard of the region left: leaving it anyway",
                   metadata: ["waited_ms": "\((ContinuousClock.now - started).milliseconds)"])
    }
}
