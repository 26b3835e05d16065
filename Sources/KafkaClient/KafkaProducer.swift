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

    /// Enqueues one record. `partition` nil = partitioned by key. `timestampMs` nil = now (so
    /// does 0: librdkafka stamps a 0 with the current time; any other value, negative ones
    /// included, is sent as given). `headers`: (name, value) pairs in order, names may repeat,
    /// a nil value is a null header value.
    public func produce(topic: String, partition: Int32? = nil, key: [UInt8]?, value: [UInt8]?,
                        timestampMs: Int64? = nil, headers: [(name: String, value: [UInt8]?)] = []) throws(KafkaError) {
        while true {
            let err: rd_kafka_resp_err_t = key.withOptionalBytes { kp, kl in
                value.withOptionalBytes { vp, vl in
                    if headers.isEmpty {
                        return rr_kafka_produce(handle, topic, partition ?? -1, kp, kl, vp, vl, timestampMs ?? 0)
                    }
                    return Self.withHeaderArrays(headers) { names, values, lengths in
                        rr_kafka_produce_headers(handle, topic, partition ?? -1, kp, kl, vp, vl, timestampMs ?? 0,
                                                 headers.count, names, values, lengths)
                    }
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

    /// C arrays of the headers' names, values and value lengths, valid during `body`.
    private static func withHeaderArrays<R>(_ headers: [(name: String, value: [UInt8]?)],
                                            _ body: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<UnsafeRawPointer?>,
                                                     UnsafePointer<Int>) -> R) -> R {
        let names = headers.map { strdup($0.name) }
        let values: [UnsafeMutableRawPointer?] = headers.map { h in
            h.value.map { bytes in
                let p = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
                bytes.withUnsafeBytes { if let base = $0.baseAddress { p.copyMemory(from: base, byteCount: bytes.count) } }
                return p
            }
        }
        defer {
            for n in names { free(n) }
            for v in values { v?.deallocate() }
        }
        let constNames: [UnsafePointer<CChar>?] = names.map { $0.map { UnsafePointer($0) } }
        let constValues: [UnsafeRawPointer?] = values.map { $0.map { UnsafeRawPointer($0) } }
        let lengths = headers.map { $0.value?.count ?? 0 }
        return constNames.withUnsafeBufferPointer { n in
            constValues.withUnsafeBufferPointer { v in
                lengths.withUnsafeBufferPointer { l in body(n.baseAddress!, v.baseAddress!, l.baseAddress!) }
            }
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
