internal import CRdKafka

/// Owns an `rd_kafka_topic_partition_list_t`.
final class TopicPartitionList {
    let pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>
    private let owned: Bool

    init(capacity: Int = 8) {
        pointer = rd_kafka_topic_partition_list_new(Int32(capacity))
        owned = true
    }

    /// Borrows a list owned by librdkafka (e.g. in a rebalance callback).
    init(borrowing pointer: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>) {
        self.pointer = pointer
        owned = false
    }

    convenience init(_ entries: [TopicPartitionOffset]) {
        self.init(capacity: max(entries.count, 1))
        for e in entries { add(e) }
    }

    deinit { if owned { rd_kafka_topic_partition_list_destroy(pointer) } }

    func add(_ e: TopicPartitionOffset) {
        let elem = rd_kafka_topic_partition_list_add(pointer, e.topic, e.partition)!
        elem.pointee.offset = e.offset
    }

    var entries: [TopicPartitionOffset] {
        let list = pointer.pointee
        return (0..<Int(list.cnt)).map { i in
            let e = list.elems[i]
            return TopicPartitionOffset(topic: String(cString: e.topic), partition: e.partition, offset: e.offset)
        }
    }

    /// Per-entry errors (after a call that sets them).
    var errors: [(TopicPartitionOffset, rd_kafka_resp_err_t)] {
        let list = pointer.pointee
        return (0..<Int(list.cnt)).compactMap { i in
            let e = list.elems[i]
            guard e.err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
            return (TopicPartitionOffset(topic: String(cString: e.topic), partition: e.partition, offset: e.offset), e.err)
        }
    }

    func setOffset(topic: String, partition: Int32, offset: Int64) {
        if let e = rd_kafka_topic_partition_list_find(pointer, topic, partition) {
            e.pointee.offset = offset
        }
    }
}
