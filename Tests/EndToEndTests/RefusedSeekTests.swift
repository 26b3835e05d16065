import Foundation
import KafkaClient
import Testing

/// End-to-end: librdkafka refuses a seek of a partition whose fetcher has not started yet (it
/// starts a partition assigned "at the committed offset" only once the group coordinator has
/// answered). The daemon must never read such a partition from wherever librdkafka starts it.
@Suite("Refused seeks")
struct RefusedSeekTests {
    @Test("A region whose stored offsets are gone, Kafka's committed offsets of its group halfway, a slow coordinator: every record is applied from the start")
    func regionOffsetsGoneSlowCoordinator() throws {
        let region = "eu-west-1"
        let h = try Harness(regions: [region], partitions: 2)
        var w = Workload(origins: ["us-east-1"], seed: 41)
        w.generate(sessions: 6, messages: 40, contentPrefix: "refused-")
        try h.cluster.produce(w.events)
        let high = try h.cluster.highWatermarks()
        // The region's group committed offsets halfway through every partition (the region's
        // database was restored from a backup older than its first batch, or replaced); the
        // region itself stores none.
        let committer = try KafkaConsumer(configuration: KafkaConfiguration([
            ("bootstrap.servers", h.cluster.bootstrap), ("log_level", "0")]), groupID: "rr-test.\(region)")
        try committer.commit(high.map { TopicPartitionOffset(topic: h.cluster.topic, partition: $0.key, offset: $0.value / 2) },
                             async: false)
        committer.close()
        #expect(try h.storedOffsets(region).isEmpty)
        // Every answer of the brokers takes 300 ms: the committed offsets arrive long after the
        // daemon has read the region's (none) and sought its partitions.
        h.cluster.setRoundTripTime(milliseconds: 300)
        defer { h.cluster.setRoundTripTime(milliseconds: 0) }
        try h.startDaemon()
        try h.waitCaughtUp(region, timeout: .seconds(90))
        try expectRegionsMatchModel(h, w)
    }
}
