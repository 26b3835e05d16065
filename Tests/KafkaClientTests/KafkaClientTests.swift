import Foundation
@testable import KafkaClient
import ReplicationCore
import Testing

/// The librdkafka wrapper on its own, against librdkafka's in-process mock cluster (a real
/// Kafka-protocol broker over loopback TCP). librdkafka's blocking calls run on a thread of
/// their own (`BlockingThread`), never on the cooperative pool the other suites share.
@Suite("KafkaClient", .timeLimit(.minutes(2)))
struct KafkaClientTests {
    /// Records produced to one partition come back in order, with key, value and timestamp, and
    /// the end of the partition is reported with that partition and the next offset.
    @Test func produceConsumeRoundTripEndsWithItsPartition() async throws {
        let (records, end, marks, count) = try await BlockingThread.run(name: "kafka-test") { () throws -> ([KafkaRecord], TopicPartitionOffset?, (low: Int64, high: Int64), Int) in
        let cluster = try KafkaMockCluster(brokers: 1)
        try cluster.createTopic("round-trip", partitions: 2)
        let bootstrap = cluster.bootstrapServers
        let producer = try KafkaProducer(configuration: KafkaConfiguration([("bootstrap.servers", bootstrap)]))
        for i in 0..<10 {
            try producer.produce(topic: "round-trip", partition: 1, key: Array("k\(i)".utf8), value: Array("v\(i)".utf8),
                                 timestampMs: 1_700_000_000_000 + Int64(i))
        }
        try producer.flush(timeoutMs: 10_000)
        let marks = try producer.queryWatermarks(topic: "round-trip", partition: 1, timeoutMs: 5_000)
        let count = try producer.partitionCount(topic: "round-trip", timeoutMs: 5_000)

        let consumer = try KafkaConsumer(configuration: KafkaConfiguration([
            ("bootstrap.servers", bootstrap), ("enable.partition.eof", "true")]), groupID: nil)
        defer { consumer.close() }
        try consumer.assign([TopicPartitionOffset(topic: "round-trip", partition: 1, offset: 0)])
        var records: [KafkaRecord] = []
        var end: TopicPartitionOffset?
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while end == nil, ContinuousClock.now < deadline {
            switch consumer.poll(timeoutMs: 100) {
            case .record(let r)?: records.append(r)
            case .endOfPartition(let e)?: end = e
            case .error(let e, let fatal)?: if fatal { throw e }
            case nil: break
            }
        }
        return (records, end, marks, count)
        }
        #expect(marks.low == 0 && marks.high == 10)
        #expect(count == 2)
        #expect(records.map(\.offset) == Array(0..<10))
        #expect(records.map { String(decoding: $0.value ?? [], as: UTF8.self) } == (0..<10).map { "v\($0)" })
        #expect(records.map { String(decoding: $0.key ?? [], as: UTF8.self) } == (0..<10).map { "k\($0)" })
        #expect(records.allSatisfy { $0.topic == "round-trip" && $0.partition == 1 })
        #expect(records.first?.timestampMs == 1_700_000_000_000)
        #expect(end == TopicPartitionOffset(topic: "round-trip", partition: 1, offset: 10))
    }

    @Test func topicPartitionListKeepsEntriesAndOffsets() {
        let entries = [TopicPartitionOffset(topic: "a", partition: 0, offset: 5),
                       TopicPartitionOffset(topic: "a", partition: 3, offset: TopicPartitionOffset.storedOffset),
                       TopicPartitionOffset(topic: "b", partition: 1, offset: 0)]
        let list = TopicPartitionList(entries)
        #expect(list.entries == entries)
        list.setOffset(topic: "a", partition: 3, offset: 42)
        list.setOffset(topic: "nope", partition: 9, offset: 1)  // absent: ignored
        #expect(list.entries.map(\.offset) == [5, 42, 0])
        #expect(list.errors.isEmpty)
    }

    /// An unknown property is named in a typed error (and its value is not).
    @Test func invalidPropertyIsATypedErrorWithoutItsValue() {
        let config = KafkaConfiguration([("bootstrap.servers", "127.0.0.1:9"), ("no.such.property", "s3cr3t-value")])
        #expect {
            try config.validate()
        } throws: { error in
            guard let e = error as? KafkaError else { return false }
            return e.code == .invalidConfiguration && e.description.contains("no.such.property")
                && !e.description.contains("s3cr3t-value")
        }
    }

    /// A broker nobody listens on: metadata requests fail with a retriable client-side error.
    @Test func unreachableBrokerIsRetriable() async throws {
        let outcome: Result<Int, KafkaError> = try await BlockingThread.run(name: "kafka-test") {
            let consumer = try KafkaConsumer(configuration: KafkaConfiguration([
                ("bootstrap.servers", "127.0.0.1:1"), ("log_level", "0")]), groupID: nil)
            defer { consumer.close() }
            return Result { () throws(KafkaError) in try consumer.partitionCount(topic: "anything", timeoutMs: 1_000) }
        }
        guard case .failure(let e) = outcome else {
            Issue.record("metadata from a broker nobody listens on: \(outcome)")
            return
        }
        #expect(e.isRetriable && e.code.rawValue < 0, "\(e)")
    }
}
