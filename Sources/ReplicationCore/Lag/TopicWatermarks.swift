import Foundation
public import KafkaClient

/// The topic's partitions and their low and high watermarks, read from the broker for every
/// region's lag monitor together: all regions measure against the same topic, so one read
/// serves them all.
///
/// A read is one metadata request (the partition count is read every time, so partitions added
/// to the topic show lag at once) and two ListOffsets requests covering every partition (the
/// earliest and the latest offsets), whatever the number of regions. A read younger than
/// `maxAge` is shared, and so is a failed one: while the broker is down, the regions' monitors
/// do not each wait out its timeouts.
///
/// - Important: ``sample()`` blocks (network I/O); call it from a dedicated thread.
public final class TopicWatermarks: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `lock`.

    /// One read of the topic.
    public struct Sample: Sendable {
        /// Partition → its first offset still held by the broker (retention deletes below it).
        public var low: [Int32: Int64]
        /// Partition → the offset the next produced record gets.
        public var high: [Int32: Int64]
        /// Unix time of the read.
        public var at: Double
    }

    public let topic: String
    private let kafka: KafkaConfiguration
    private let maxAge: Duration
    private let lock = NSLock()
    private var consumer: KafkaConsumer?
    private var last: (at: ContinuousClock.Instant, result: Result<Sample, KafkaError>)?
    private var reads = 0

    public init(kafka: KafkaConfiguration, topic: String, maxAge: Duration = .milliseconds(400)) {
        var conf = kafka
        conf.set("socket.timeout.ms", "3000")
        self.kafka = conf
        self.topic = topic
        self.maxAge = maxAge
    }

    /// The latest read, or a new one when the latest is older than `maxAge`.
    public func sample() throws(KafkaError) -> Sample {
        lock.lock()
        defer { lock.unlock() }
        if let last, ContinuousClock.now - last.at < maxAge { return try last.result.get() }
        let result: Result<Sample, KafkaError>
        do {
            result = .success(try read())
        } catch {
            result = .failure(error)
        }
        reads += 1
        last = (ContinuousClock.now, result)
        return try result.get()
    }

    /// How many reads went to the broker so far.
    public var brokerReads: Int { lock.withLock { reads } }

    private func read() throws(KafkaError) -> Sample {
        let c: KafkaConsumer
        if let consumer {
            c = consumer
        } else {
            c = try KafkaConsumer(configuration: kafka, groupID: nil)
            consumer = c
        }
        let count = try c.partitionCount(topic: topic, timeoutMs: 2000)
        let partitions = Array(0..<Int32(count))
        let high = try c.listOffsets(topic: topic, partitions: partitions, at: TopicPartitionOffset.end, timeoutMs: 2000)
        let low = try c.listOffsets(topic: topic, partitions: partitions, at: TopicPartitionOffset.beginning, timeoutMs: 2000)
        return Sample(low: low, high: high, at: Date().timeIntervalSince1970)
    }

    /// Releases the client (idempotent; a later ``sample()`` makes a new one).
    public func close() {
        lock.withLock {
            consumer?.close()
            consumer = nil
        }
    }
}
