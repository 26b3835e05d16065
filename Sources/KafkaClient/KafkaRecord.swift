/// One consumed Kafka record, copied out of librdkafka's buffers.
public struct KafkaRecord: Sendable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64
    public var key: [UInt8]?
    public var value: [UInt8]?
    /// The record timestamp in milliseconds since the epoch (create or log-append time), or nil.
    public var timestampMs: Int64?

    public init(topic: String, partition: Int32, offset: Int64, key: [UInt8]?, value: [UInt8]?, timestampMs: Int64?) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestampMs = timestampMs
    }
}

/// A topic partition with an offset (meaning depends on the call: a start position or a next offset).
public struct TopicPartitionOffset: Sendable, Hashable {
    public var topic: String
    public var partition: Int32
    public var offset: Int64

    public init(topic: String, partition: Int32, offset: Int64) {
        self.topic = topic
        self.partition = partition
        self.offset = offset
    }

    /// "Start from the committed offset, or `auto.offset.reset` when there is none".
    public static let storedOffset: Int64 = -1000  // RD_KAFKA_OFFSET_STORED
    /// The earliest offset still in the partition.
    public static let beginning: Int64 = -2  // RD_KAFKA_OFFSET_BEGINNING
    /// The high watermark.
    public static let end: Int64 = -1  // RD_KAFKA_OFFSET_END
}
