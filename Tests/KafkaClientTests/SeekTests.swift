import Foundation
import KafkaClient
import ReplicationCore
import Testing

/// Seeks against librdkafka's in-process mock cluster: what makes a seek fail for a partition,
/// and where such a partition is read from.
@Suite("KafkaClient seeks", .timeLimit(.minutes(2)))
struct SeekTests {
    /// A group consumer's partition assigned "at the committed offset" is only started once the
    /// group coordinator has answered with that offset. A seek before that is refused for the
    /// partition, and the fetch then starts at the group's committed offset, not where the seek
    /// asked: a failed seek must be reported, and retried until it is accepted.
    @Test func seekBeforeTheFetcherStartsIsReportedForItsPartition() async throws {
        let (refused, first) = try await BlockingThread.run(name: "kafka-test") { () throws -> ([(position: TopicPartitionOffset, error: KafkaError)], Int64?) in
            let cluster = try KafkaMockCluster(brokers: 1)
            try cluster.createTopic("seeks", partitions: 2)
            let bootstrap = cluster.bootstrapServers
            let producer = try KafkaProducer(configuration: KafkaConfiguration([("bootstrap.servers", bootstrap)]))
            for i in 0..<10 { try producer.produce(topic: "seeks", partition: 0, key: nil, value: Array("v\(i)".utf8)) }
            try producer.flush(timeoutMs: 10_000)
            let conf = KafkaConfiguration([("bootstrap.servers", bootstrap), ("log_level", "0")])
            // The group's committed offset of partition 0 is 6.
            let committer = try KafkaConsumer(configuration: conf, groupID: "g")
            try committer.commit([TopicPartitionOffset(topic: "seeks", partition: 0, offset: 6)], async: false)
            committer.close()
            // A slow broker: the coordinator's committed offsets arrive long after the seek below.
            cluster.setRoundTripTime(1, milliseconds: 400)
            let consumer = try KafkaConsumer(configuration: conf, groupID: "g")
            defer { consumer.close() }
            try consumer.assign([TopicPartitionOffset(topic: "seeks", partition: 0, offset: TopicPartitionOffset.storedOffset)])
            // Partition 1 is not assigned at all.
            let refused = try consumer.seek([TopicPartitionOffset(topic: "seeks", partition: 0, offset: 0),
                                             TopicPartitionOffset(topic: "seeks", partition: 1, offset: 0)], timeoutMs: 5_000)
            cluster.setRoundTripTime(1, milliseconds: 0)
            // Sought again until librdkafka takes it (once the fetcher runs, at the committed offset).
            var retry = refused.filter { $0.position.partition == 0 }.map(\.position)
            let deadline = ContinuousClock.now.advanced(by: .seconds(30))
            while !retry.isEmpty, ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: 0.05)
                retry = try consumer.seek(retry, timeoutMs: 5_000).map(\.position)
            }
            var first: Int64?
            while first == nil, ContinuousClock.now < deadline {
                if case .record(let r)? = consumer.poll(timeoutMs: 100) { first = r.offset }
            }
            return (refused, first)
        }
        #expect(refused.map(\.position.partition) == [0, 1], "\(refused)")
        #expect(refused.allSatisfy { $0.error.code.rawValue == -172 }, "_STATE, the fetcher not started: \(refused.map(\.error))")
        #expect(first == 0, "the partition was read from offset \(first.map(String.init) ?? "none"), not from where it was sought")
    }
}
