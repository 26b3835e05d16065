internal import CRdKafka
import Foundation
import Synchronization

/// A librdkafka consumer (`rd_kafka_t` of type consumer).
///
/// - Important: Every method blocks (network I/O or waiting in librdkafka). Call them from a
///   dedicated thread, never from Swift's cooperative pool. One thread at a time per consumer:
///   the rebalance handler runs inside ``poll(timeoutMs:)`` on the calling thread.
public final class KafkaConsumer: @unchecked Sendable {
    // @unchecked Sendable: the rd_kafka_t handle is thread-safe for the calls made here; the
    // wrapper itself holds no mutable Swift state after init. Callers use one thread (documented).

    /// A change of the partitions this consumer owns (consumer-group mode).
    public enum RebalanceEvent: Sendable {
        /// Partitions added to the assignment. Return the position to start each of them at.
        case assigned([TopicPartitionOffset])
        /// Partitions taken away (`lost`: taken without a clean handover, e.g. session timeout).
        case revoked([TopicPartitionOffset], lost: Bool)
    }

    /// What one poll produced.
    public enum PollResult: Sendable {
        case record(KafkaRecord)
        /// The consumer reached the end of a partition's log (only with `enable.partition.eof`):
        /// `offset` is the next offset that partition will have.
        case endOfPartition(TopicPartitionOffset)
        /// A consumer error. `isFatal` means this consumer instance cannot go on.
        case error(KafkaError, isFatal: Bool)
    }

    /// Called inside `poll` on rebalance. For `.assigned`, return the start positions
    /// (entries with ``TopicPartitionOffset/storedOffset`` fall back to Kafka's committed offsets).
    public typealias RebalanceHandler = @Sendable (RebalanceEvent) -> [TopicPartitionOffset]

    /// Receives librdkafka's own log lines: (syslog level, facility, message).
    public typealias LogHandler = @Sendable (Int32, String, String) -> Void

    private let handle: OpaquePointer
    /// The consumer queue (`rd_kafka_queue_get_consumer`), for batched consumption.
    private let queue: OpaquePointer
    private let context: Unmanaged<CallbackContext>
    private var closed = false
    private let closeLock = NSLock()

    /// Creates a consumer.
    /// - Parameters:
    ///   - configuration: user properties (applied after this wrapper's defaults, so they win).
    ///   - groupID: the consumer group, or nil for a group-less consumer used with ``assign(_:)``.
    ///   - rebalance: the rebalance handler for subscribe mode.
    ///   - pauseAssigned: pause every newly assigned partition right after assigning it, inside
    ///     the rebalance callback, so that nothing is fetched until the application has decided
    ///     where to start (it then seeks and resumes).
    /// - Throws: ``KafkaError`` on an invalid property (named) or when the client cannot be created.
    public init(configuration: KafkaConfiguration, groupID: String?,
                rebalance: RebalanceHandler? = nil, pauseAssigned: Bool = false, log: LogHandler? = nil) throws(KafkaError) {
        var conf = KafkaConfiguration([
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("enable.partition.eof", "false"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            // Bounded prefetch, one consumer per region: librdkafka keeps several times the
            // payload bytes per queued record (ops, fetch buffers). 2 MB of payload is a few
            // batches (~4,500 records of ~450 bytes): at 70k records/s, 65 ms of work, refilled
            // while a batch is applied. Measured with scripts/bench: 32 MB → 142 MB peak RSS
            // draining into one region; 2 MB → 65 MB, and faster (less memory traffic).
            ("queued.max.messages.kbytes", "2048"),
            ("queued.min.messages", "20000"),
        ])
        if let groupID { conf.set("group.id", groupID) } else { conf.set("group.id", "region-replicator-unused") }
        for (k, v) in configuration.properties { conf.set(k, v) }
        let raw = try conf.makeConf()
        // librdkafka ≥ 2.1 waits fetch.queue.backoff.ms (default 1 s) before fetching again once
        // the queue bounds above are reached, which starves a fast consumer; older versions
        // (Debian's 2.0.2) do not know the property and fetch again at once anyway.
        if !configuration.properties.contains(where: { $0.0 == "fetch.queue.backoff.ms" }) {
            var errbuf = [CChar](repeating: 0, count: 256)
            _ = rd_kafka_conf_set(raw, "fetch.queue.backoff.ms", "20", &errbuf, errbuf.count)
        }
        let ctx = Unmanaged.passRetained(CallbackContext(rebalance: rebalance, pauseAssigned: pauseAssigned, log: log))
        rd_kafka_conf_set_opaque(raw, ctx.toOpaque())
        if log != nil {
            rd_kafka_conf_set_log_cb(raw) { rk, level, fac, buf in
                guard let rk, let opaque = rd_kafka_opaque(rk) else { return }
                let ctx = Unmanaged<CallbackContext>.fromOpaque(opaque).takeUnretainedValue()
                ctx.log?(level, fac.map { String(cString: $0) } ?? "", KafkaLog.withoutThreadPrefix(buf.map { String(cString: $0) } ?? ""))
            }
        }
        if rebalance != nil {
            rd_kafka_conf_set_rebalance_cb(raw) { rk, err, partitions, opaque in
                guard let rk, let partitions, let opaque else { return }
                let ctx = Unmanaged<CallbackContext>.fromOpaque(opaque).takeUnretainedValue()
                KafkaConsumer.handleRebalance(rk: rk, err: err, partitions: partitions, ctx: ctx)
            }
        }
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_CONSUMER, raw, &errbuf, errbuf.count) else {
            ctx.release()
            // rd_kafka_new does not take ownership of conf on failure.
            rd_kafka_conf_destroy(raw)
            throw KafkaError(code: .invalidConfiguration,
                             message: "cannot create consumer: \(String(errorBuffer: errbuf))")
        }
        handle = rk
        context = ctx
        rd_kafka_poll_set_consumer(rk)
        guard let q = rd_kafka_queue_get_consumer(rk) else {
            rd_kafka_destroy(rk)
            ctx.release()
            throw KafkaError(code: .invalidConfiguration, message: "cannot create consumer: no consumer queue")
        }
        queue = q
    }

    deinit {
        close()
        rd_kafka_queue_destroy(queue)
        if Self.destroyAbortsBeforeAssignment && context.takeUnretainedValue().subscribed.load(ordering: .relaxed)
            && !context.takeUnretainedValue().everAssigned.load(ordering: .relaxed) {
            // librdkafka before 2.3.0 aborts (`rd_kafka_sticky_assignor_state_destroy: Assertion
            // 'assignor_state' failed`, librdkafka #4312) when a cooperative-sticky group
            // member that was never given an assignment is destroyed — e.g. a shard stopped while
            // its group still waits for a dead member's session to end. It has left the group
            // (closed above); its handle and callback context are left to the process's end.
            return
        }
        rd_kafka_destroy(handle)
        context.release()
    }

    /// Debian 12's librdkafka (2.0.2) has the destroy-before-first-assignment abort, fixed in 2.3.0.
    static let destroyAbortsBeforeAssignment = rd_kafka_version() < 0x0203_0000

    private static func handleRebalance(rk: OpaquePointer, err: rd_kafka_resp_err_t,
                                        partitions: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>,
                                        ctx: CallbackContext) {
        let cooperative = String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
        let list = TopicPartitionList(borrowing: partitions)
        switch err {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
            ctx.everAssigned.store(true, ordering: .relaxed)
            let positions = ctx.rebalance?(.assigned(list.entries)) ?? []
            for p in positions { list.setOffset(topic: p.topic, partition: p.partition, offset: p.offset) }
            if cooperative {
                if let e = rd_kafka_incremental_assign(rk, partitions) { rd_kafka_error_destroy(e) }
            } else {
                rd_kafka_assign(rk, partitions)
            }
            if ctx.pauseAssigned { rd_kafka_pause_partitions(rk, partitions) }
        default:  // RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS or an error: give everything back
            _ = ctx.rebalance?(.revoked(list.entries, lost: rd_kafka_assignment_lost(rk) != 0))
            if cooperative {
                if let e = rd_kafka_incremental_unassign(rk, partitions) { rd_kafka_error_destroy(e) }
            } else {
                rd_kafka_assign(rk, nil)
            }
        }
    }

    /// Subscribes to topics (consumer-group mode).
    public func subscribe(topics: [String]) throws(KafkaError) {
        let list = TopicPartitionList(capacity: topics.count)
        for t in topics { list.add(TopicPartitionOffset(topic: t, partition: -1, offset: 0)) }  // RD_KAFKA_PARTITION_UA
        context.takeUnretainedValue().subscribed.store(true, ordering: .relaxed)
        let err = rd_kafka_subscribe(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "subscribe") }
    }

    /// Assigns partitions directly (no group, no rebalancing), starting at the given offsets.
    public func assign(_ partitions: [TopicPartitionOffset]) throws(KafkaError) {
        let list = TopicPartitionList(partitions)
        let err = rd_kafka_assign(handle, list.pointer)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "assign") }
    }

    /// Waits up to `timeoutMs` for the next record or error. Serves rebalance callbacks.
    /// - Returns: nil when nothing arrived in time.
    public func poll(timeoutMs: Int32) -> PollResult? {
        guard let msg = rd_kafka_consumer_poll(handle, timeoutMs) else { return nil }
        defer { rd_kafka_message_destroy(msg) }
        return convert(msg)
    }

    /// Takes up to `maxRecords` records or errors from the consumer queue in one call
    /// (`rd_kafka_consume_batch_queue`), waiting up to `timeoutMs` for the first of them.
    /// Serves rebalance callbacks like ``poll(timeoutMs:)``.
    /// - Returns: what arrived, in order (empty when nothing did in time).
    public func pollBatch(maxRecords: Int, timeoutMs: Int32) -> [PollResult] {
        let n = max(1, min(maxRecords, 10_000))
        return withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<rd_kafka_message_t>?.self, capacity: n) { buf in
            let got = rd_kafka_consume_batch_queue(queue, Int32(timeoutMs), buf.baseAddress, n)
            guard got > 0 else { return [] }
            var out: [PollResult] = []
            out.reserveCapacity(got)
            var topicCache: (OpaquePointer, String)? = nil
            for i in 0..<got {
                guard let msg = buf[i] else { continue }
                out.append(convert(msg, topicCache: &topicCache))
                rd_kafka_message_destroy(msg)
            }
            return out
        }
    }

    private func convert(_ msg: UnsafeMutablePointer<rd_kafka_message_t>) -> PollResult {
        var cache: (OpaquePointer, String)? = nil
        return convert(msg, topicCache: &cache)
    }

    /// Copies one message out of librdkafka's buffers (`topicCache` saves a String per record).
    private func convert(_ msg: UnsafeMutablePointer<rd_kafka_message_t>, topicCache: inout (OpaquePointer, String)?) -> PollResult {
        let m = msg.pointee
        if m.err == RD_KAFKA_RESP_ERR__PARTITION_EOF {
            let topic = m.rkt.map { String(cString: rd_kafka_topic_name($0)) } ?? ""
            return .endOfPartition(TopicPartitionOffset(topic: topic, partition: m.partition, offset: m.offset))
        }
        if m.err != RD_KAFKA_RESP_ERR_NO_ERROR {
            var fatal = m.err == RD_KAFKA_RESP_ERR__FATAL
            var error = KafkaError(m.err, context: "consume")
            if let payload = m.payload, m.len > 0 {
                let text = String(decoding: UnsafeRawBufferPointer(start: payload, count: m.len), as: UTF8.self)
                error.message = "consume: \(text)"
            }
            if fatal {
                var buf = [CChar](repeating: 0, count: 512)
                let code = rd_kafka_fatal_error(handle, &buf, buf.count)
                error = KafkaError(code: .init(rawValue: code.rawValue), message: "fatal: \(String(errorBuffer: buf))")
            }
            fatal = fatal || m.err == RD_KAFKA_RESP_ERR__AUTHENTICATION
            return .error(error, isFatal: fatal)
        }
        let topic: String
        if let rkt = m.rkt {
            if let (p, name) = topicCache, p == rkt {
                topic = name
            } else {
                topic = String(cString: rd_kafka_topic_name(rkt))
                topicCache = (rkt, topic)
            }
        } else {
            topic = ""
        }
        let key: [UInt8]? = m.key.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: m.key_len)) }
        let value: [UInt8]? = m.payload.map { [UInt8](UnsafeRawBufferPointer(start: $0, count: m.len)) }
        var tstype = RD_KAFKA_TIMESTAMP_NOT_AVAILABLE
        let ts = rd_kafka_message_timestamp(msg, &tstype)
        return .record(KafkaRecord(topic: topic, partition: m.partition, offset: m.offset, key: key, value: value,
                                   timestampMs: tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE || ts < 0 ? nil : ts))
    }

    /// Commits next offsets to the group coordinator.
    /// - Parameter async: when true, returns at once (the result only reaches the log).
    public func commit(_ offsets: [TopicPartitionOffset], async: Bool) throws(KafkaError) {
        guard !offsets.isEmpty else { return }
        let list = TopicPartitionList(offsets)
        let err = rd_kafka_commit(handle, list.pointer, async ? 1 : 0)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "commit") }
    }

    /// The offsets committed to Kafka for this consumer's group (-1001 when none).
    public func committed(_ partitions: [TopicPartitionOffset], timeoutMs: Int32) throws(KafkaError) -> [TopicPartitionOffset] {
        let list = TopicPartitionList(partitions)
        let err = rd_kafka_committed(handle, list.pointer, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "committed") }
        return list.entries
    }

    /// Stops fetching from the partitions (already-fetched records are discarded by librdkafka;
    /// fetching resumes at the application's position on ``resume(_:)``).
    public func pause(_ partitions: [TopicPartitionOffset]) {
        guard !partitions.isEmpty else { return }
        let list = TopicPartitionList(partitions)
        rd_kafka_pause_partitions(handle, list.pointer)
    }

    public func resume(_ partitions: [TopicPartitionOffset]) {
        guard !partitions.isEmpty else { return }
        let list = TopicPartitionList(partitions)
        rd_kafka_resume_partitions(handle, list.pointer)
    }

    /// Moves the fetch position of assigned partitions.
    ///
    /// librdkafka refuses a seek per partition: one it does not know (`_UNKNOWN_PARTITION`), one
    /// whose fetcher has not started (`_STATE`: not assigned, revoked, or assigned at the
    /// group's committed offset while the coordinator has not answered yet) or is stopping
    /// (`_PREV_IN_PROGRESS`). Such a partition keeps fetching from wherever it was, or starts
    /// at the group's committed offset later: the caller must seek it again.
    /// - Returns: the positions that were refused, with librdkafka's reason (empty: all taken).
    /// - Throws: ``KafkaError`` when the call as a whole failed (a timeout waiting for the
    ///   seeks to be applied): then none of them is known to be taken.
    public func seek(_ positions: [TopicPartitionOffset], timeoutMs: Int32) throws(KafkaError) -> [(position: TopicPartitionOffset, error: KafkaError)] {
        guard !positions.isEmpty else { return [] }
        let list = TopicPartitionList(positions)
        if let e = rd_kafka_seek_partitions(handle, list.pointer, timeoutMs) {
            throw KafkaError(consuming: e, context: "seek")
        }
        return list.errors.map { p, err in
            (p, KafkaError(err, context: "seek \(p.topic)[\(p.partition)] to \(p.offset)"))
        }
    }

    /// The current assignment.
    public func assignment() -> [TopicPartitionOffset] {
        var ptr: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>? = nil
        guard rd_kafka_assignment(handle, &ptr) == RD_KAFKA_RESP_ERR_NO_ERROR, let ptr else { return [] }
        defer { rd_kafka_topic_partition_list_destroy(ptr) }
        return TopicPartitionList(borrowing: ptr).entries
    }

    /// Asks the partition leader for the low and high watermarks.
    public func queryWatermarks(topic: String, partition: Int32, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        try Metadata.queryWatermarks(handle, topic: topic, partition: partition, timeoutMs: timeoutMs)
    }

    /// The cluster's id (from metadata), or nil when the broker did not answer in time or
    /// reports none. Blocking.
    public func clusterID(timeoutMs: Int32) -> String? {
        guard let raw = rd_kafka_clusterid(handle, timeoutMs) else { return nil }
        defer { rd_kafka_mem_free(handle, raw) }
        return String(cString: raw)
    }

    /// The number of partitions of `topic`.
    /// - Throws: ``KafkaError`` (``KafkaError/Code/unknownTopic`` when it does not exist).
    public func partitionCount(topic: String, timeoutMs: Int32) throws(KafkaError) -> Int {
        try Metadata.partitionCount(handle, topic: topic, timeoutMs: timeoutMs)
    }

    /// The earliest (`at` = ``TopicPartitionOffset/beginning``: the low watermark) or latest
    /// (`at` = ``TopicPartitionOffset/end``: the high watermark) offset of each partition, in
    /// one ListOffsets request per partition leader (not one request per partition).
    /// - Throws: ``KafkaError`` when the request fails or any partition has no answer.
    public func listOffsets(topic: String, partitions: [Int32], at: Int64, timeoutMs: Int32) throws(KafkaError) -> [Int32: Int64] {
        guard !partitions.isEmpty else { return [:] }
        let list = TopicPartitionList(partitions.map { TopicPartitionOffset(topic: topic, partition: $0, offset: at) })
        let err = rd_kafka_offsets_for_times(handle, list.pointer, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "list offsets of \(topic)") }
        if let (p, e) = list.errors.first { throw KafkaError(e, context: "list offsets of \(topic)[\(p.partition)]") }
        var out: [Int32: Int64] = [:]
        for e in list.entries {
            guard e.offset >= 0 else {
                throw KafkaError(code: .timedOut, message: "list offsets of \(topic)[\(e.partition)]: no offset returned")
            }
            out[e.partition] = e.offset
        }
        return out
    }

    /// The first offset whose timestamp is ≥ `timestampMs` per partition (-1 when none / unknown).
    public func offsetsForTimes(_ query: [TopicPartitionOffset], timeoutMs: Int32) throws(KafkaError) -> [TopicPartitionOffset] {
        let list = TopicPartitionList(query)
        let err = rd_kafka_offsets_for_times(handle, list.pointer, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "offsets_for_times") }
        return list.entries
    }

    /// Leaves the group cleanly (revoking through the rebalance handler). Idempotent.
    public func close() {
        closeLock.lock()
        defer { closeLock.unlock() }
        guard !closed else { return }
        closed = true
        rd_kafka_consumer_close(handle)
    }
}

enum Metadata {
    static func queryWatermarks(_ rk: OpaquePointer, topic: String, partition: Int32, timeoutMs: Int32) throws(KafkaError) -> (low: Int64, high: Int64) {
        var low: Int64 = -1
        var high: Int64 = -1
        let err = rd_kafka_query_watermark_offsets(rk, topic, partition, &low, &high, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR {
            throw KafkaError(err, context: "watermarks of \(topic)[\(partition)]")
        }
        return (low, high)
    }

    static func partitionCount(_ rk: OpaquePointer, topic: String, timeoutMs: Int32) throws(KafkaError) -> Int {
        guard let rkt = rd_kafka_topic_new(rk, topic, nil) else {
            throw KafkaError(code: .invalidConfiguration, message: "invalid topic name")
        }
        defer { rd_kafka_topic_destroy(rkt) }
        var md: UnsafePointer<rd_kafka_metadata>? = nil
        let err = rd_kafka_metadata(rk, 0, rkt, &md, timeoutMs)
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "metadata for \(topic)") }
        guard let md else { throw KafkaError(code: .timedOut, message: "metadata for \(topic): no answer") }
        defer { rd_kafka_metadata_destroy(md) }
        guard md.pointee.topic_cnt > 0 else { throw KafkaError(code: .unknownTopic, message: "topic \(topic) does not exist") }
        let t = md.pointee.topics[0]
        if t.err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(t.err, context: "topic \(topic)") }
        guard t.partition_cnt >= 0 else {
            throw KafkaError(code: .unknownTopic, message: "topic \(topic): the broker reports \(t.partition_cnt) partitions")
        }
        return Int(t.partition_cnt)
    }
}
