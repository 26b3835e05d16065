import Foundation
import KafkaClient
import PostgresClient
import Synchronization

// MARK: - The job

/// Re-applies a range of the topic to one region through the daemon's apply path
/// (``RegionApplier``), with its own group-less, non-committing consumer (`assign`, one partition
/// at a time). It writes no offsets, so it is safe while the daemon runs: last-writer-wins and
/// the tombstones make the overlap harmless.
///
/// Batches are cut every `maxBatchEvents` records of a partition and at the partition's range
/// end — never by time — so a dry run and the real run see the same batches.
///
/// A dry run applies the same batches to private temporary copies (`pg_temp`) of the rows and
/// tombstones the range touches, so its classification is exactly what the real run would
/// report; the region's own tables are never written. (It reads the range twice: once to learn
/// which sessions and messages it touches.)
///
/// - Important: Blocking (librdkafka, libpq): call ``run(progress:notice:)`` on a dedicated thread.
///   ``cancel()`` may be called from any thread.
public final class ReplayJob: Sendable {
    public let request: ReplayRequest
    private let cancelled = Atomic<Bool>(false)

    public init(request: ReplayRequest) {
        self.request = request
    }

    /// Stops after the batch in flight (which commits or rolls back atomically).
    public func cancel() { cancelled.store(true, ordering: .relaxed) }

    public var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    static let metadataTimeoutMs: Int32 = 10_000

    /// Runs the replay to its end (or until ``cancel()``).
    /// - Parameters:
    ///   - progress: called after every batch and about twice a second while reading.
    ///   - notice: one-line remarks meant for the operator (fallbacks, retries).
    /// - Throws: ``ReplayError`` (its `kind` maps to an exit code).
    public func run(progress: (ReplayProgress) -> Void, notice: (String) -> Void) throws(ReplayError) -> ReplaySummary {
        var summary = ReplaySummary(region: request.region, dryRun: request.dryRun)
        let consumer: KafkaConsumer
        do {
            consumer = try KafkaConsumer(configuration: request.kafka, groupID: nil)
        } catch {
            throw ReplayError(.failed, "cannot create the Kafka consumer: \(error)")
        }
        defer { consumer.close() }

        let ranges = try resolveRanges(consumer, summary: &summary, notice: notice)
        summary.partitions = ranges

        var session = try ReplaySession(request: request)
        defer { session.close() }

        if request.dryRun {
            // Pass 1: which sessions and messages does the range touch?
            var sessions = Set<String>()
            var messages = Set<UUID>()
            _ = try read(ranges, phase: "scan", progress: progress, notice: notice) { records in
                for r in records {
                    guard case .success(let e) = EventDecoder.decode(r.value) else { continue }
                    sessions.insert(e.sessionID)
                    switch e {
                    case .messageUpserted(let u): messages.insert(u.messageID)
                    case .messageDeleted(let d): messages.insert(d.messageID)
                    case .sessionDeleted: break
                    }
                }
                return OutcomeCounts()
            }
            if isCancelled { summary.interrupted = true; return summary }
            try session.prepareDryRun(sessions: Array(sessions), messages: messages.map(\.uuidString))
        }

        let outcome = try read(ranges, phase: "apply", progress: progress, notice: notice) { records throws(ReplayError) in
            try session.apply(records, notice: notice, cancelled: { self.isCancelled })
        }
        summary.read = outcome.read
        summary.skippedByTimestamp = outcome.skipped
        summary.counts = outcome.counts
        summary.interrupted = outcome.interrupted || isCancelled
        return summary
    }

    // MARK: - Reading

    struct ReadOutcome {
        var read = 0
        var skipped = 0
        var counts = OutcomeCounts()
        var interrupted = false
    }

    /// Reads every range, one partition at a time, handing batches of at most `maxBatchEvents`
    /// in-range records to `sink`.
    ///
    /// Each partition gets a fresh group-less consumer with `enable.partition.eof`: the end-of-
    /// partition event then unambiguously belongs to that partition (librdkafka's event does not
    /// reach us with its partition), which ends the range early when the log has a gap before
    /// `end` (compaction, transaction markers).
    private func read(_ ranges: [ReplayPartitionRange], phase: String,
                      progress: (ReplayProgress) -> Void, notice: (String) -> Void,
                      sink: ([KafkaRecord]) throws(ReplayError) -> OutcomeCounts?) throws(ReplayError) -> ReadOutcome {
        var out = ReadOutcome()
        let total = ranges.reduce(Int64(0)) { $0.saturatingAdding($1.count) }
        var done: Int64 = 0
        let started = ContinuousClock.now
        var lastReport = started
        func report(force: Bool) {
            let now = ContinuousClock.now
            guard force || now - lastReport >= .milliseconds(500) else { return }
            lastReport = now
            let elapsed = max((now - started).seconds, 0.001)
            progress(ReplayProgress(phase: phase, done: done, total: total, rate: Double(done) / elapsed, counts: out.counts))
        }
        report(force: true)
        for range in ranges where range.count > 0 {
            if isCancelled { out.interrupted = true; break }
            var kafka = request.kafka
            kafka.set("enable.partition.eof", "true")
            let consumer: KafkaConsumer
            do {
                consumer = try KafkaConsumer(configuration: kafka, groupID: nil)
                try consumer.assign([TopicPartitionOffset(topic: request.topic, partition: range.partition, offset: range.start)])
            } catch {
                throw ReplayError(.kafkaUnavailable, "Kafka: assign \(request.topic)[\(range.partition)]: \(error)")
            }
            defer { consumer.close() }
            var batch: [KafkaRecord] = []
            var next = range.start
            var idleSince = ContinuousClock.now
            var warnedIdle = false
            /// Hands the batch to the sink; false when the sink gave up because of ``cancel()``.
            func flush() throws(ReplayError) -> Bool {
                guard !batch.isEmpty else { return true }
                guard let counts = try sink(batch) else { return false }
                out.counts = out.counts + counts
                out.read += batch.count
                batch.removeAll(keepingCapacity: true)
                report(force: true)
                return true
            }
            partitionLoop: while next < range.end {
                if isCancelled { out.interrupted = true; break }
                guard let result = consumer.poll(timeoutMs: 200) else {
                    report(force: false)
                    if !warnedIdle && ContinuousClock.now - idleSince > .seconds(30) {
                        warnedIdle = true
                        notice("partition \(range.partition): no record for 30 s at offset \(next) (of \(range.end)); still waiting")
                    }
                    continue
                }
                switch result {
                case .endOfPartition(let end):
                    if end.partition == range.partition { break partitionLoop }  // the log ends before `end` (gaps)
                case .error(let e, let fatal):
                    if fatal { throw ReplayError(.kafkaUnavailable, "Kafka: \(e)") }
                case .record(let r):
                    idleSince = ContinuousClock.now
                    guard r.partition == range.partition, r.offset >= next else { continue }
                    if r.offset >= range.end { break partitionLoop }
                    // next ≤ r.offset < range.end ≤ Int64.max: the + 1 fits; the sum saturates.
                    done = done.saturatingAdding((r.offset + 1).saturatingSubtracting(next))
                    next = r.offset + 1
                    if let ts = r.timestampMs {
                        if let lo = range.skipBeforeMs, ts < lo { out.skipped += 1; continue }
                        if let hi = range.skipFromMs, ts >= hi { out.skipped += 1; continue }
                    }
                    batch.append(r)
                    if batch.count >= request.maxBatchEvents, !(try flush()) { out.interrupted = true; break partitionLoop }
                }
                report(force: false)
            }
            if out.interrupted { break }
            if !(try flush()) { out.interrupted = true; break }
            done = done.saturatingAdding(max(0, range.end.saturatingSubtracting(next)))  // a gap at the end of the log
        }
        report(force: true)
        return out
    }
}
