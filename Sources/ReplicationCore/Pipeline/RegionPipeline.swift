import Foundation
import KafkaClient
public import Logging
import PostgresClient
import Synchronization

/// One region's replication pipeline: its own consumer (group `<prefix>.<region>`), its own
/// database connection, its own thread.
///
/// The loop: poll up to `maxBatchEvents` records (or `maxBatchBytes`) or `maxBatchDelay` →
/// decode → one transaction with rows, dead letters and next offsets, which first checks that
/// the region still stores the next offsets the pipeline believes → commit the offsets to
/// Kafka. Two pure types decide, this class performs their decisions: which partitions it
/// owns, where each continues, which are paused and which records wait is
/// ``PartitionBookkeeping``'s business; what follows an apply attempt (commit, retry with
/// backoff, halve the batch, dead-letter a record, follow moved stored offsets) is
/// ``ApplyPolicy``'s, by the failure's SQLSTATE class (``ApplyFailure``). Other regions are
/// untouched (their own thread, consumer and connection).
///
/// The consumer side is in `RegionPipeline+Consumer.swift`, the database side in
/// `RegionPipeline+Database.swift`.
public final class RegionPipeline: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is confined to the pipeline thread except
    // `stopRequested` (an Atomic).
    public let settings: PipelineSettings
    let logger: Logger
    var applier: RegionApplier
    let status: ReplicationStatus
    let metrics: RegionMetrics
    /// The region's other shards' departures from the group (nil with one pipeline per region).
    let departures: ShardDepartures?
    private let stopRequested = Atomic<Bool>(false)

    // Pipeline-thread state.
    var db: PostgresConnection?
    var book = PartitionBookkeeping()
    /// What follows an apply attempt; holds the chunk limit and the retry backoffs.
    var policy: ApplyPolicy
    /// When the stored offsets of unresolved partitions may be read again (after a failure).
    var resolveBackoff = Backoff()
    var nextResolve = ContinuousClock.now
    private var lastProgressLog = ContinuousClock.now
    var totals = OutcomeCounts()
    var lastKafkaWarning: ContinuousClock.Instant?
    var lastResolveWarning: ContinuousClock.Instant?
    /// Records with Kafka metadata the daemon cannot use as is, since the last warning about them.
    var metadataWarnings = MetadataWarnings()
    /// When partitions whose seek librdkafka refused are sought again (``PartitionBookkeeping/retryPositioning()``).
    var positionRetry = RetryTimer()
    /// ``ShardDepartures/count`` when this shard's consumer was last assigned partitions.
    var departuresAtAssignment = 0
    /// The chunk whose transaction is in the region's database now (`RegionPipeline+Overlap.swift`).
    var inFlight: InFlight?
    /// Rebalances that came while a chunk was in flight: performed once its outcome is accounted for.
    var deferredRebalances: [KafkaConsumer.RebalanceEvent] = []
    /// The last chunk's outcome came with rebalances performed after it.
    var rebalancedMeanwhile = false
    var decodedAhead = DecodedAhead()
    var builtAhead: BuiltAhead?

    /// - Parameter departures: shared by the `apply.connections` pipelines of one region, so that
    ///   they leave the group one after another, each from a settled group (``ShardDepartures``).
    public init(settings: PipelineSettings, status: ReplicationStatus, metrics: RegionMetrics, logger: Logger,
                departures: ShardDepartures? = nil) {
        self.settings = settings
        self.status = status
        self.metrics = metrics
        self.departures = departures
        var logger = logger
        logger[metadataKey: "region"] = "\(settings.region)"
        if let shard = settings.shard { logger[metadataKey: "shard"] = "\(shard)" }
        self.logger = logger
        self.applier = RegionApplier(region: settings.region, table: settings.table, applyToOrigin: settings.applyToOrigin,
                                     columns: settings.columns)
        self.policy = ApplyPolicy(maxChunk: settings.maxBatchEvents)
    }

    /// Asks the loop to stop after the in-flight batch (committed or rolled back atomically).
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    func heartbeat() {
        status.heartbeat(region: settings.region, loop: settings.loopName, timeout: settings.timeouts.heartbeat)
    }

    /// Runs the pipeline on a dedicated thread until ``requestStop()``; returns when the thread ends.
    /// - Throws: ``PipelineError`` on a fatal Kafka error.
    public func run() async throws {
        let result: Result<Void, PipelineError> = await withGracefulShutdownAndCancellation(onStop: { self.requestStop() }) {
            await BlockingThread.run(name: "region-\(settings.region)\(settings.shard.map { "-\($0)" } ?? "")") { () -> Result<Void, PipelineError> in
                do {
                    try self.loop()
                    return .success(())
                } catch let e as PipelineError {
                    return .failure(e)
                } catch {
                    return .failure(PipelineError(description: "\(error)"))
                }
            }
        }
        try result.get()
    }

    // MARK: - The loop (pipeline thread)

    private func loop() throws {
        logger.info("pipeline starting", metadata: ["consumer_group": "\(settings.consumerGroup)", "topic": "\(settings.topic)"])
        ensureDatabase()
        if stopping { return }
        let consumer = try makeConsumer()
        defer {
            consumer.close()
            departures?.left()
            db?.close()
            logger.info("pipeline stopped", metadata: ["events": "\(totals)"])
        }
        do {
            try consumer.subscribe(topics: [settings.topic])
        } catch {
            throw PipelineError(description: "region \(settings.region): \(error)")
        }
        while !stopping {
            if book.pending.isEmpty { decodedAhead.removeAll() }
            try fillBatch(consumer)
            if book.pending.isEmpty && !book.hasProgressWithoutRecords { continue }
            try applyPending(consumer)
            logProgressIfDue()
        }
        settleBeforeLeaving(consumer)
    }

    // MARK: - Applying what is pending

    /// One transaction's worth of pending records, and what its transaction needs.
    struct Chunk {
        let records: [KafkaRecord]
        let decoded: [DecodedRecord]
        let progress: [PartitionProgress]
        let expected: [Int32: Int64?]
        var count: Int { records.count }

        init(_ records: [KafkaRecord], decoded: [DecodedRecord], progress: [PartitionProgress], expected: [Int32: Int64?]) {
            self.records = records
            self.decoded = decoded
            self.progress = progress
            self.expected = expected
        }
    }

    /// Applies `pending` in transactions of at most `policy.chunkLimit` records until all of it
    /// is applied or the pipeline stops: every attempt's outcome goes to ``ApplyPolicy``, and
    /// this loop performs its decision. While one chunk is in the database the records behind
    /// it are read and built (``applyOverlapping(_:ahead:_:)``); between two chunks, nothing
    /// in flight, newly assigned partitions are positioned.
    private func applyPending(_ consumer: KafkaConsumer) throws {
        policy.startApplying()
        var first = true
        while (!book.pending.isEmpty || book.hasProgressWithoutRecords) && !stopping {
            // Liveness is "the loop is making attempts", on every path (halving included): one
            // attempt takes at most a reconnect and one answer, within the heartbeat timeout.
            heartbeat()
            if !first && !book.retrying {
                try topUp(consumer)
                resolvePositions(consumer)
                retryPositioning(consumer)
                logProgressIfDue()
                if book.pending.isEmpty && !book.hasProgressWithoutRecords { break }
            }
            first = false
            let (chunk, ahead) = nextChunk(Array(book.pending.prefix(policy.chunkLimit)))
            reportOldest(chunk.records)
            switch try applyOverlapping(chunk, ahead: ahead, consumer) {
            case .committed:
                if case .next(let failedAttempts?) = policy.after(.committed(records: chunk.count)) {
                    logger.notice("region recovered", metadata: ["attempts": "\(failedAttempts)"])
                }
            case .failed(let failure, let error):
                metrics.retried()
                let decision = policy.after(.failed(failure, records: chunk.count))
                // Partitions revoked meanwhile: the single record may not be ours any more; the
                // next attempt, on what is still pending, decides again.
                if decision == .deadLetter && rebalancedMeanwhile { continue }
                guard try act(on: decision, failure: failure, error: error, chunk, consumer) else { return }
            }
        }
    }

    /// Performs the policy's decision after an attempt on `chunk` failed with `error` (of class `failure`).
    /// - Returns: false when the pipeline stopped during a wait (the batch is abandoned).
    private func act(on decision: ApplyPolicy.Decision, failure: ApplyFailure, error: any Error,
                     _ chunk: Chunk, _ consumer: KafkaConsumer) throws -> Bool {
        switch decision {
        case .next:
            return true
        case .split(let limit):
            logger.warning("batch too big or too slow for the region's database: applying it in smaller transactions",
                           metadata: ["error": "\(error)", "records": "\(chunk.count)", "now": "\(limit)"])
            return true
        case .followStoredOffsets:
            followStoredOffsets(error, consumer)
            return true
        case .deadLetter:
            guard let (dlFailure, dlError) = deadLetterAlone(chunk, error: error, consumer) else { return true }
            let next = policy.after(.deadLetterFailed(dlFailure))
            if next == .followStoredOffsets {
                followStoredOffsets(dlError, consumer)
                return true
            }
            return try act(on: next, failure: failure, error: error, chunk, consumer)
        case .backOff(let retry):
            return try backOff(retry, failure: failure, error: error, consumer)
        }
    }

    /// Waits out `retry` with the partitions paused, serving the consumer meanwhile (group
    /// heartbeats, rebalances, new partitions' positions); the same records are tried next.
    /// - Returns: false when the pipeline stopped meanwhile (the batch is abandoned, re-read on restart).
    private func backOff(_ retry: ApplyPolicy.Retry, failure: ApplyFailure, error: any Error, _ consumer: KafkaConsumer) throws -> Bool {
        let problem = retry.schema ? "schema problem (the region stops until it is fixed): \(error)" : "\(error)"
        status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: false, problem: problem)
        logger.warning(retry.schema ? "the region's schema does not fit, retrying slowly" : "apply failed, retrying", metadata: [
            "error": "\(error)", "sqlstate_class": "\(failure.rawValue)", "attempt": "\(retry.attempt)",
            "retry_in_ms": "\(retry.delay.milliseconds)"])
        perform(book.applyFailed(), consumer)
        let until = ContinuousClock.now.advanced(by: retry.delay)
        while ContinuousClock.now < until && !stopping {
            heartbeat()
            try take(consumer.pollBatch(maxRecords: 500, timeoutMs: 100), consumer)
            resolvePositions(consumer)
            retryPositioning(consumer)
        }
        if stopping {
            logger.notice("stopping: abandoning the uncommitted batch (it is re-read on restart)",
                          metadata: ["records": "\(book.pending.count)"])
            book.abandonPending()
            return false
        }
        if book.pending.isEmpty { perform(book.retryEnded(), consumer) }  // every partition revoked meanwhile
        return true
    }

    /// A chunk committed: metrics, status, bookkeeping, and the offsets to Kafka.
    func committed(_ result: ApplyResult, _ chunk: Chunk, started: ContinuousClock.Instant, _ consumer: KafkaConsumer) {
        let committedAt = Timestamp.now
        noteTimestamps(chunk.records, committedAtMs: committedAt.microseconds / 1000)
        metrics.batchCommitted(result, duration: ContinuousClock.now - started, committedAtMs: committedAt.microseconds / 1000)
        status.committed(region: settings.region, pipeline: settings.loopName, progress: chunk.progress, at: committedAt.secondsSinceEpoch)
        totals = totals + result.counts
        perform(book.applySucceeded(count: chunk.count, progress: chunk.progress), consumer)
        do {
            try consumer.commit(chunk.progress.map { TopicPartitionOffset(topic: settings.topic, partition: $0.partition, offset: $0.nextOffset) },
                                async: true)
        } catch {
            logger.debug("Kafka commit failed (the region's database holds the offsets)", metadata: ["error": "\(error)"])
        }
    }

    func logProgressIfDue() {
        let now = ContinuousClock.now
        guard now - lastProgressLog >= .seconds(10) else { return }
        lastProgressLog = now
        logger.info("progress", metadata: ["events": "\(totals)",
                                           "next_offsets": "\(book.owned.sorted().compactMap { p in book.committed(p).map { "\(p):\($0)" } })"])
    }
}
