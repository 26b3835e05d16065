internal import CRdKafka
import Foundation

/// A librdkafka producer, used by the development tool and the tests.
///
/// - Important: ``produce(topic:partition:key:value:timestampMs:)`` may block while the local
///   queue is full; call from a thread you can block.
public final class KafkaProducer: @unchecked Sendable {
    // @unchecked Sendable: rd_kafka_t producer handles are thread-safe.
    private let handle: OpaquePointer

    public init(configuration: KafkaConfiguration) throws(KafkaError) {
        var conf = KafkaConfiguration([("linger.ms", "5"), ("message.max.bytes", "16000000")])
        for (k, v) in configuration.properties { conf.set(k, v) }
        let raw = try conf.makeConf()
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, raw, &errbuf, errbuf.count) else {
            rd_kafka_conf_destroy(raw)
            throw KafkaError(code: .invalidConfiguration, message: "cannot create producer: \(String(errorBuffer: errbuf))")
        }
        handle = rk
    }

    deinit {
        _ = rd_kafka_flush(handle, 10_000)
        rd_kafka_destroy(handle)
    }

    /// Enqueues one record. `partition` nil = partitioned by key. `timestampMs` nil = now.
    public func produce(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?,
                        timestampMs: Int64? = nil) throws(KafkaError) {
        while true {
            let err: rd_kafka_resp_err_t = key.withOptionalBytes { kp, kl in
                value.withOptionalBytes { vp, vl in
                    rr_kafka_produce(handle, topic, partition ?? -1, kp, kl, vp, vl, timestampMs ?? 0)
                }
            }
            if err == RD_KAFKA_RESP_ERR__QUEUE_FULL {
                rd_kafka_poll(handle, 50)
                continue
            }
            if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "produce") }
            rd_kafka_poll(handle, 0)
            return
        }
    }

    /// Waits until every enqueued record is delivered (or the timeout passes).
    public func flush(timeoutMs: Int32) throws(KafkaError) {
        let err = rd_kafka_flush(handle, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "flush") }
    }

    /// The number of partitions of `topic`.
    public func partitionCount(topic: String, timeoutMs: Int32) throws(KafkaError) -> Int {
        try Metadata.partitionCount(handle, topic: topic, timeoutMs: timeoutMs)
    }

    public func queryWatermarks(topic: String, partition: Int32, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        try Metadata.queryWatermarks(handle, topic: topic, partition: partition, timeoutMs: timeoutMs)
    }
}

extension Optional where Wrapped == [UInt8] {
    func withOptionalBytes<R>(_ body: (UnsafeRawPointer?, Int) -> R) -> R {
        switch self {
        case .none: return body(nil, 0)
        case .some(let bytes): return bytes.withUnsafeBytes { body($0.baseAddress, $0.count) }
        }
    }
}
