internal import CRdKafka
import Foundation

/// A librdkafka producer: the development tool's and the tests' (``produce(topic:partition:key:value:timestampMs:)``),
/// and capture's idempotent one with delivery reports (``init(idempotent:)``,
/// ``enqueue(topic:key:value:timestampMs:token:)``, ``pollDeliveries(timeoutMs:)``).
///
/// - Important: ``produce(topic:partition:key:value:timestampMs:)`` may block while the local
///   queue is full; call from a thread you can block.
public final class KafkaProducer: @unchecked Sendable {
    // @unchecked Sendable: rd_kafka_t producer handles are thread-safe.
    private let handle: OpaquePointer
    /// Delivery reports of records enqueued with a token (``init(idempotent:)`` only).
    private let reports: DeliveryReports?
    /// The pipe librdkafka writes to when a delivery report waits to be served
    /// (``init(idempotent:)`` only; nil if no pipe could be made).
    private let wake: DeliveryWake?

    public convenience init(configuration: KafkaConfiguration) throws(KafkaError) {
        try self.init(configuration, reports: nil)
    }

    /// An idempotent producer (`enable.idempotence`: acks from all in-sync replicas, no
    /// duplicates or reordering from its own retries, per partition) that reports the delivery
    /// of every record enqueued with a token. `configuration`'s properties come first, so
    /// idempotence cannot be turned off.
    public convenience init(idempotent configuration: KafkaConfiguration) throws(KafkaError) {
        var conf = configuration
        conf.set("enable.idempotence", "true")
        try self.init(conf, reports: DeliveryReports())
    }

    private init(_ configuration: KafkaConfiguration, reports: DeliveryReports?) throws(KafkaError) {
        self.reports = reports
        var conf = KafkaConfiguration([("linger.ms", "5"), ("message.max.bytes", "16000000")])
        for (k, v) in configuration.properties { conf.set(k, v) }
        let raw = try conf.makeConf()
        if let reports {
            rd_kafka_conf_set_opaque(raw, Unmanaged.passUnretained(reports).toOpaque())
            rd_kafka_conf_set_dr_msg_cb(raw) { _, message, opaque in
                guard let message, let opaque else { return }
                let err = message.pointee.err
                Unmanaged<DeliveryReports>.fromOpaque(opaque).takeUnretainedValue().append(KafkaDelivery(
                    token: UInt64(UInt(bitPattern: message.pointee._private)),
                    error: err == RD_KAFKA_RESP_ERR_NO_ERROR ? nil : KafkaError(err, context: "delivery"),
                    partition: message.pointee.partition, offset: message.pointee.offset))
            }
        }
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, raw, &errbuf, errbuf.count) else {
            rd_kafka_conf_destroy(raw)
            throw KafkaError(code: .invalidConfiguration, message: "cannot create producer: \(String(errorBuffer: errbuf))")
        }
        handle = rk
        wake = reports == nil ? nil : DeliveryWake(rk)
    }

    deinit {
        _ = rd_kafka_flush(handle, 10_000)
        wake?.disable()
        rd_kafka_destroy(handle)
    }

    /// A file descriptor that becomes readable when a delivery report waits to be served
    /// (``init(idempotent:)`` only): wait on it beside other sockets (`poll(2)`), then call
    /// ``pollDeliveries(timeoutMs:)``, which also empties it. Owned by the producer: do not close it.
    /// nil when the producer has none (then poll ``pollDeliveries(timeoutMs:)`` on a timer).
    public var deliveryWakeFD: Int32? { wake?.readFD }

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

    /// Enqueues one record carrying `token` (≥ 1), partitioned by key, without blocking.
    /// - Returns: false when the local queue is full (serve ``pollDeliveries(timeoutMs:)`` and retry).
    public func enqueue(topic: String, key: [UInt8]?, value: [UInt8]?, timestampMs: Int64?, token: UInt64) throws(KafkaError) -> Bool {
        let opaque = UnsafeMutableRawPointer(bitPattern: UInt(token))
        let err: rd_kafka_resp_err_t = key.withOptionalBytes { kp, kl in
            value.withOptionalBytes { vp, vl in
                rr_kafka_produce_opaque(handle, topic, kp, kl, vp, vl, timestampMs ?? 0, opaque)
            }
        }
        if err == RD_KAFKA_RESP_ERR__QUEUE_FULL { return false }
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "produce") }
        return true
    }

    /// Serves delivery reports for up to `timeoutMs` and returns those that arrived (in the
    /// order librdkafka reported them: per partition in produce order, partitions interleaved).
    public func pollDeliveries(timeoutMs: Int32) -> [KafkaDelivery] {
        // Emptied before serving: a report queued after this wakes the next wait.
        wake?.drain()
        rd_kafka_poll(handle, timeoutMs)
        return reports?.drain() ?? []
    }

    /// Records enqueued and not yet delivered or failed (librdkafka's out-queue).
    public var outstanding: Int { Int(rd_kafka_outq_len(handle)) }

    /// The producer's fatal error, if it raised one (an idempotent producer then stops
    /// delivering: make a new one).
    public var fatalError: KafkaError? {
        var errbuf = [CChar](repeating: 0, count: 512)
        let err = rd_kafka_fatal_error(handle, &errbuf, errbuf.count)
        guard err != RD_KAFKA_RESP_ERR_NO_ERROR else { return nil }
        return KafkaError(code: KafkaError.Code(rawValue: err.rawValue), message: "fatal: \(String(errorBuffer: errbuf))")
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

/// The outcome of one record enqueued with a token.
public struct KafkaDelivery: Sendable {
    public var token: UInt64
    /// nil: the broker acknowledged the record. Otherwise why it was not delivered.
    public var error: KafkaError?
    /// Where the broker stored the record (-1 when not delivered).
    public var partition: Int32 = -1
    public var offset: Int64 = -1
}

/// A non-blocking pipe librdkafka writes one byte to whenever an event (a delivery report) is
/// queued on the producer's empty main queue (`rd_kafka_queue_io_event_enable`), so that a
/// thread waiting on another socket sees a report as it arrives.
final class DeliveryWake: @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the fds are closed once, in deinit.
    let readFD: Int32
    private let writeFD: Int32
    private let queue: OpaquePointer

    init?(_ rk: OpaquePointer) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { return nil }
        for fd in fds {
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        }
        guard let q = rd_kafka_queue_get_main(rk) else {
            close(fds[0])
            close(fds[1])
            return nil
        }
        readFD = fds[0]
        writeFD = fds[1]
        queue = q
        var byte: UInt8 = 1
        rd_kafka_queue_io_event_enable(q, writeFD, &byte, 1)
    }

    /// Reads whatever was written (never blocks).
    func drain() {
        withUnsafeTemporaryAllocation(byteCount: 64, alignment: 1) { buffer in
            while read(readFD, buffer.baseAddress, buffer.count) > 0 {}
        }
    }

    /// Stops the writes and releases the queue: before the handle is destroyed.
    func disable() {
        rd_kafka_queue_io_event_enable(queue, -1, nil, 0)
        rd_kafka_queue_destroy(queue)
    }

    deinit {
        close(readFD)
        close(writeFD)
    }
}

/// Delivery reports collected by the callback (which runs inside `rd_kafka_poll`).
final class DeliveryReports: @unchecked Sendable {
    // @unchecked Sendable: `items` is guarded by `lock`.
    private let lock = NSLock()
    private var items: [KafkaDelivery] = []

    func append(_ d: KafkaDelivery) { lock.withLock { items.append(d) } }

    func drain() -> [KafkaDelivery] {
        lock.withLock {
            defer { items.removeAll(keepingCapacity: true) }
            return items
        }
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
