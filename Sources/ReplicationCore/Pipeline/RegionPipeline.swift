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
/// Kafka. Which partitions it owns, where each continues, which are paused and which records
/// wait is ``PartitionBookkeeping``'s business (pure, unit-tested); this class performs its
/// actions. A failed batch is handled by its SQLSTATE (``ApplyFailure``): transient failures
/// pause the partitions and retry with capped backoff, forever; batches too big or too slow
/// are halved; a schema problem stops this region only and retries slowly; moved stored
/// offsets (a restore) are followed. Other regions are untouched (their own thread, consumer
/// and connection).
public final class RegionPipeline: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is confined to the pipeline thread except
    // `stopRequested` (an Atomic).
    public let settings: PipelineSettings
    private let logger: Logger
    private var applier: RegionApplier
    private let status: ReplicationStatus
    private let metrics: RegionMetrics
    private let stopRequested = Atomic<Bool>(false)

    // Pipeline-thread state.
    private var db: PostgresConnection?
    private var book = PartitionBookkeeping()
    /// Most records per transaction now: `maxBatchEvents`, halved while batches are too big
    /// or too slow for the region (``ApplyFailure/split``), doubled back after clean ones.
    private var chunkLimit: Int
    private var cleanChunks = 0
    /// When the stored offsets of unresolved partitions may be read again (after a failure).
    private var resolveBackoff = Backoff()
    private var nextResolve = ContinuousClock.now
    private var lastProgressLog = ContinuousClock.now
    private var totals = OutcomeCounts()
    private var lastKafkaWarning: ContinuousClock.Instant?
    private var lastResolveWarning: ContinuousClock.Instant?

    /// Longest a healthy loop goes without a heartbeat (a query may take up to its 60 s timeout).
    static let heartbeatTimeout: Duration = .seconds(90)
    /// Retry delays while the region's schema is not what the daemon needs.
    static func schemaBackoff() -> Backoff { Backoff(initial: .seconds(5), maximum: .seconds(60)) }

    public init(settings: PipelineSettings, status: ReplicationStatus, metrics: RegionMetrics, logger: Logger) {
        self.settings = settings
        self.status = status
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "region"] = "\(settings.region)"
        if let shard = settings.shard { logger[metadataKey: "shard"] = "\(shard)" }
        self.logger = logger
        self.applier = RegionApplier(region: settings.region, table: settings.table, applyToOrigin: settings.applyToOrigin,
                                     columns: settings.columns)
        self.chunkLimit = settings.maxBatchEvents
    }

    /// Asks the loop to stop after the in-flight batch (committed or rolled back atomically).
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    private var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    private func heartbeat() {
        status.heartbeat(region: settings.region, loop: settings.loopName, timeout: Self.heartbeatTimeout)
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
            db?.close()
            logger.info("pipeline stopped", metadata: ["events": "\(totals)"])
        }
        do {
            try consumer.subscribe(topics: [settings.topic])
        } catch {
            throw PipelineError(description: "region \(settings.region): \(error)")
        }
        while !stopping {
            try fillBatch(consumer)
            if book.pending.isEmpty { continue }
            try applyPending(consumer)
            logProgressIfDue()
        }
    }

    private func makeConsumer() throws -> KafkaConsumer {
        let logger = self.logger
        do {
            // New partitions are paused inside the rebalance callback; their start positions
            // are read from the region's database in the loop (no I/O in the callback).
            return try KafkaConsumer(
                configuration: settings.consumerConfiguration, groupID: settings.consumerGroup,
                rebalance: { [unowned self] event in self.rebalanced(event) },
                pauseAssigned: true,
                log: { level, facility, message in
                    // A failed Kafka offset commit (typically "rebalance in progress") costs nothing:
                    // the region's database holds the offsets, and the next commit supersedes it.
                    // librdkafka warns once per partition set and commit: keep those at debug.
                    let level: Logger.Level = facility == "COMMITFAIL" ? .debug : Logger.Level(syslog: level)
                    logger.log(level: level, "librdkafka: \(message)", metadata: ["facility": "\(facility)"])
                })
        } catch {
            throw PipelineError(description: "region \(settings.region): \(error)")
        }
    }

    /// Polls until the batch is full (events or bytes), or nothing more is ready, or
    /// `maxBatchDelay` after its first record. Records go through the bookkeeping, which
    /// accepts only each partition's next offset.
    private func fillBatch(_ consumer: KafkaConsumer) throws {
        var deadline: ContinuousClock.Instant? = nil
        while book.pending.count < settings.maxBatchEvents && book.pendingBytes < settings.maxBatchBytes && !stopping {
            heartbeat()
            resolvePositions(consumer)
            let timeout: Int32
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero { break }
                timeout = Int32(max(1, min(200, left.milliseconds)))
            } else {
                timeout = 200
            }
            // rd_kafka_consume_batch_queue waits until it has *all* the records asked for or the
            // timeout passes: take what is there at once, and wait only for a first record.
            // Once a batch has records and nothing more is ready, it is applied at once:
            // waiting out max_batch_delay would only add latency when records trickle in, while
            // under a backlog the prefetched queue is never empty and batches fill up anyway
            // (and records that arrive during one apply make the next batch: group commit).
            let before = book.pending.count
            var results = consumer.pollBatch(maxRecords: settings.maxBatchEvents - book.pending.count, timeoutMs: 0)
            if results.isEmpty {
                if deadline != nil { break }
                results = consumer.pollBatch(maxRecords: 1, timeoutMs: timeout)
            }
            try take(results, consumer)
            if book.pending.count == before {
                if deadline == nil && !book.pending.isEmpty { break }  // pending survived a retry episode
                continue
            }
            if deadline == nil { deadline = ContinuousClock.now.advanced(by: settings.maxBatchDelay) }
        }
    }

    /// Hands polled records to the bookkeeping and performs what it asks; reports errors.
    private func take(_ results: [KafkaConsumer.PollResult], _ consumer: KafkaConsumer) throws {
        var records: [KafkaRecord] = []
        records.reserveCapacity(results.count)
        for result in results {
            switch result {
            case .record(let r):
                records.append(r)
            case .endOfPartition:
                break  // not enabled for the daemon's consumer
            case .error(let e, let fatal):
                if fatal { throw PipelineError.fatalKafka(e, region: settings.region, groupInstanceID: settings.groupInstanceID) }
                // librdkafka reports every failed connection attempt; one line per 30 s is enough.
                let now = ContinuousClock.now
                if lastKafkaWarning.map({ now - $0 >= .seconds(30) }) ?? true {
                    lastKafkaWarning = now
                    logger.warning("Kafka consumer error (librdkafka retries by itself)", metadata: ["error": "\(e)"])
                } else {
                    logger.debug("Kafka consumer error", metadata: ["error": "\(e)"])
                }
            }
        }
        if !records.isEmpty { perform(book.polled(records), consumer) }
    }

    /// Performs the bookkeeping's actions on the consumer (seeks before resumes, as listed).
    private func perform(_ actions: [BookkeepingAction], _ consumer: KafkaConsumer) {
        var seeks: [TopicPartitionOffset] = []
        func flushSeeks() {
            guard !seeks.isEmpty else { return }
            do {
                try consumer.seek(seeks, timeoutMs: 5000)
            } catch {
                logger.warning("seek failed", metadata: ["error": "\(error)", "positions": "\(seeks.map { "\($0.partition)@\($0.offset)" })"])
            }
            seeks.removeAll()
        }
        func tpo(_ p: Int32, _ offset: Int64 = 0) -> TopicPartitionOffset {
            TopicPartitionOffset(topic: settings.topic, partition: p, offset: offset)
        }
        for action in actions {
            switch action {
            case .seek(let p, let target):
                switch target {
                case .beginning: seeks.append(tpo(p, TopicPartitionOffset.beginning))
                case .offset(let n): seeks.append(tpo(p, n))
                }
            case .pause(let parts):
                flushSeeks()
                consumer.pause(parts.map { tpo($0) })
            case .resume(let parts):
                flushSeeks()
                consumer.resume(parts.map { tpo($0) })
            case .queryLowWatermark(let p):
                flushSeeks()
                do {
                    let low = try consumer.queryWatermarks(topic: settings.topic, partition: p, timeoutMs: 5000).low
                    perform(book.lowWatermark(partition: p, low), consumer)
                } catch {
                    logger.warning("cannot read a partition's low watermark; re-reading from its next offset",
                                   metadata: ["partition": "\(p)", "error": "\(error)"])
                    perform(book.lowWatermarkUnavailable(partition: p), consumer)
                }
            case .gone(let p, let from, let to):
                let n = Int(to - from)
                logger.warning("records deleted from the topic before they were applied (retention): skipped", metadata: [
                    "partition": "\(p)", "offsets": "\(from)..<\(to)", "records": "\(n)"])
                metrics.gone(n)
                status.recordsGone(region: settings.region, count: Int64(n))
                totals[.gone] += n
            case .noRecords(let p, let from, let to):
                logger.info("no records at these offsets (compaction or transaction markers)", metadata: [
                    "partition": "\(p)", "offsets": "\(from)..<\(to)"])
            }
        }
        flushSeeks()
    }

    /// Reads the region's stored offsets for partitions assigned since the last call, and
    /// positions them (in the loop, never inside the rebalance callback). A failure is retried
    /// later with backoff; meanwhile the loop keeps polling, so the group never waits on the
    /// region's database.
    private func resolvePositions(_ consumer: KafkaConsumer) {
        guard book.needsStoredOffsets, ContinuousClock.now >= nextResolve else { return }
        do {
            let db = try ensureConnectedOnce()
            let stored = try RegionApplier.storedOffsets(group: settings.consumerGroup, topic: settings.topic,
                                                         table: applier.tables.offsets, on: db)
            let unresolved = book.owned.filter { book.committed($0) == .unresolved }.sorted()
            perform(book.positionsResolved(stored: stored), consumer)
            resolveBackoff = Backoff()
            logger.info("partitions positioned at the region's stored offsets", metadata: [
                "positions": "\(unresolved.map { "\($0)@\(stored[$0].map(String.init) ?? "beginning")" })",
                "paused_until_retry_succeeds": "\(book.retrying)"])
        } catch {
            let delay = resolveBackoff.next()
            nextResolve = ContinuousClock.now.advanced(by: delay)
            if !book.retrying { status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: false, problem: "\(error)") }
            let now = ContinuousClock.now
            if lastResolveWarning.map({ now - $0 >= .seconds(10) }) ?? true {
                lastResolveWarning = now
                logger.warning("cannot read the stored offsets of newly assigned partitions; they stay paused",
                               metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)"])
            }
        }
    }

    /// Applies `pending` in transactions of at most `chunkLimit` records; handles failures by
    /// their class (``ApplyFailure``) until everything applied or the pipeline stops.
    private func applyPending(_ consumer: KafkaConsumer) throws {
        var backoff = Backoff()
        var schemaBackoff = Self.schemaBackoff()
        while !book.pending.isEmpty && !stopping {
            let chunk = Array(book.pending.prefix(max(1, chunkLimit)))
            reportOldest(chunk)
            let decoded = chunk.map { r in
                DecodedRecord(record: r, event: EventDecoder.decode(r.value))
            }
            let progress = Self.progress(of: chunk)
            let expected = book.expectedStored(for: progress.map(\.partition))
            let failure: ApplyFailure
            let error: any Error
            do {
                let db = try ensureConnectedOnce()
                let started = ContinuousClock.now
                let result = try applier.apply(decoded, progress: progress, expectedOffsets: expected,
                                               consumerGroup: settings.consumerGroup, topic: settings.topic, on: db)
                committed(result, chunk: chunk, progress: progress, started: started, consumer)
                if backoff.attempt > 0 || schemaBackoff.attempt > 0 {
                    logger.notice("region recovered", metadata: ["attempts": "\(backoff.attempt + schemaBackoff.attempt)"])
                    backoff = Backoff()
                    schemaBackoff = Self.schemaBackoff()
                }
                if chunkLimit < settings.maxBatchEvents {
                    cleanChunks += 1
                    if cleanChunks >= 8 {
                        chunkLimit = min(settings.maxBatchEvents, chunkLimit * 2)
                        cleanChunks = 0
                    }
                }
                continue
            } catch let e as PostgresError {
                failure = ApplyFailure.classify(e)
                error = e
            } catch let e as PipelineError {
                failure = .schema  // not migrated: a table is missing
                error = e
            } catch let e {
                failure = .transient
                error = e
            }
            metrics.retried()
            switch failure {
            case .offsetsMoved:
                followStoredOffsets(error, consumer)
                continue
            case .split where chunk.count > 1:
                chunkLimit = max(1, chunk.count / 2)
                cleanChunks = 0
                logger.warning("batch too big or too slow for the region's database: applying it in smaller transactions",
                               metadata: ["error": "\(error)", "records": "\(chunk.count)", "now": "\(chunkLimit)"])
                continue
            case .split:
                // One record the region cannot take even alone (too large, too slow).
                if deadLetterAlone(decoded, error: error, progress: progress, expected: expected, consumer) { continue }
            case .transient, .deadLetter, .schema:
                break
            }
            // Wait, partitions paused, serving the consumer (group heartbeats, rebalances, new
            // partitions' positions) meanwhile; then retry.
            let schema = failure == .schema
            let delay = schema ? schemaBackoff.next() : backoff.next()
            let attempt = schema ? schemaBackoff.attempt : backoff.attempt
            let problem = schema ? "schema problem (the region stops until it is fixed): \(error)" : "\(error)"
            status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: false, problem: problem)
            logger.warning(schema ? "the region's schema does not fit, retrying slowly" : "apply failed, retrying", metadata: [
                "error": "\(error)", "sqlstate_class": "\(failure.rawValue)", "attempt": "\(attempt)",
                "retry_in_ms": "\(delay.milliseconds)"])
            perform(book.applyFailed(), consumer)
            let until = ContinuousClock.now.advanced(by: delay)
            while ContinuousClock.now < until && !stopping {
                heartbeat()
                try take(consumer.pollBatch(maxRecords: 500, timeoutMs: 100), consumer)
                resolvePositions(consumer)
            }
            if stopping {
                logger.notice("stopping: abandoning the uncommitted batch (it is re-read on restart)",
                              metadata: ["records": "\(book.pending.count)"])
                book.abandonPending()
                return
            }
            if book.pending.isEmpty { perform(book.retryEnded(), consumer) }  // every partition revoked meanwhile
        }
    }

    /// A chunk committed: metrics, status, bookkeeping, and the offsets to Kafka.
    private func committed(_ result: ApplyResult, chunk: [KafkaRecord], progress: [PartitionProgress],
                           started: ContinuousClock.Instant, _ consumer: KafkaConsumer) {
        let committedAt = Timestamp.now
        metrics.batchCommitted(result, duration: ContinuousClock.now - started, committedAtMs: committedAt.microseconds / 1000)
        status.committed(region: settings.region, pipeline: settings.loopName, progress: progress, at: committedAt.secondsSinceEpoch)
        totals = totals + result.counts
        perform(book.applySucceeded(count: chunk.count, progress: progress), consumer)
        do {
            try consumer.commit(progress.map { TopicPartitionOffset(topic: settings.topic, partition: $0.partition, offset: $0.nextOffset) },
                                async: true)
        } catch {
            logger.debug("Kafka commit failed (the region's database holds the offsets)", metadata: ["error": "\(error)"])
        }
    }

    /// The region's stored offsets are not the ones this pipeline believed (a restore from
    /// backup, a manual reset, another writer): they win. Re-reads them and continues from there.
    private func followStoredOffsets(_ error: any Error, _ consumer: KafkaConsumer) {
        do {
            let db = try ensureConnectedOnce()
            let stored = try RegionApplier.storedOffsets(group: settings.consumerGroup, topic: settings.topic,
                                                         table: applier.tables.offsets, on: db)
            let owned = book.owned
            perform(book.storedOffsetsMoved(stored: stored), consumer)
            status.storedOffsetsMoved(region: settings.region, stored.filter { owned.contains($0.key) })
            logger.warning("the region's stored offsets moved (restore, manual reset or another writer): continuing from them", metadata: [
                "detail": "\(error)",
                "positions": "\(owned.sorted().map { "\($0)@\(stored[$0].map(String.init) ?? "beginning")" })"])
        } catch {
            // The batch stays pending; the next attempt checks again.
            logger.warning("cannot re-read the region's stored offsets", metadata: ["error": "\(error)"])
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    /// Dead-letters the single record the region refuses even alone with a "split" error.
    /// - Returns: false when that failed too (the caller waits and retries).
    private func deadLetterAlone(_ decoded: [DecodedRecord], error: any Error, progress: [PartitionProgress],
                                 expected: [Int32: Int64?], _ consumer: KafkaConsumer) -> Bool {
        let chunk = book.pending.prefix(decoded.count).map { $0 }
        do {
            let db = try ensureConnectedOnce()
            let started = ContinuousClock.now
            let result = try applier.deadLetter(decoded, error: "the region's database cannot apply this record even alone: \(error)",
                                                progress: progress, expectedOffsets: expected,
                                                consumerGroup: settings.consumerGroup, topic: settings.topic, on: db)
            logger.warning("record dead-lettered: the region's database cannot apply it even alone",
                           metadata: ["partition": "\(progress.first?.partition ?? -1)", "offset": "\(chunk.first?.offset ?? -1)",
                                      "error": "\(error)"])
            committed(result, chunk: chunk, progress: progress, started: started, consumer)
            return true
        } catch let e as PostgresError where ApplyFailure.classify(e) == .offsetsMoved {
            followStoredOffsets(e, consumer)
            return true
        } catch {
            return false
        }
    }

    /// The first record of each partition in `chunk` is that partition's oldest unapplied one:
    /// its timestamp makes the region's lag_seconds exact at once, while the database is down
    /// too, without waiting for the monitor to peek it.
    private func reportOldest(_ chunk: [KafkaRecord]) {
        var seen = Set<Int32>()
        for r in chunk where seen.insert(r.partition).inserted {
            guard let ms = r.timestampMs else { continue }
            status.oldestUnapplied(region: settings.region, partition: r.partition, offset: r.offset, timestampMs: ms)
        }
    }

    static func progress(of records: [KafkaRecord]) -> [PartitionProgress] {
        var byPartition: [Int32: PartitionProgress] = [:]
        for r in records {
            let next = r.offset + 1
            if let p = byPartition[r.partition], p.nextOffset >= next { continue }
            byPartition[r.partition] = PartitionProgress(partition: r.partition, nextOffset: next, lastRecordMs: r.timestampMs)
        }
        return byPartition.values.sorted { $0.partition < $1.partition }
    }

    // MARK: - Rebalance (called inside poll, on the pipeline thread: no I/O, no waiting)

    private func rebalanced(_ event: KafkaConsumer.RebalanceEvent) -> [TopicPartitionOffset] {
        switch event {
        case .revoked(let parts, let lost):
            book.revoked(parts.map(\.partition))
            status.assignment(region: settings.region, pipeline: settings.loopName, revoked: parts.map(\.partition))
            logger.info("partitions revoked", metadata: ["partitions": "\(parts.map(\.partition).sorted())", "lost": "\(lost)"])
            return []
        case .assigned(let parts):
            // Paused right after assigning (KafkaConsumer's pauseAssigned); the loop reads their
            // stored offsets, then seeks and resumes them.
            _ = book.assigned(parts.map(\.partition))
            nextResolve = ContinuousClock.now
            status.assignment(region: settings.region, pipeline: settings.loopName, assigned: parts.map(\.partition))
            logger.info("partitions assigned (paused until their stored offsets are read)",
                        metadata: ["partitions": "\(parts.map(\.partition).sorted())"])
            return parts.map { TopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: TopicPartitionOffset.storedOffset) }
        }
    }

    // MARK: - Database connection

    /// Connects (or reuses the connection), checking the schema on a new connection and
    /// resolving the bookkeeping tables' schema-qualified names.
    private func ensureConnectedOnce() throws -> PostgresConnection {
        if let db, db.isOpen { return db }
        db = nil
        let c = try PostgresConnection.openForApply(conninfo: settings.conninfo, applicationName: "region-replicator \(settings.region)\(settings.shard.map { " \($0)" } ?? "")")
        if settings.markApplierOrigin { try ApplierOrigin.markSession(c) }
        let (missing, tables) = try Schema.check(c, table: settings.table)
        if !missing.isEmpty {
            c.close()
            throw PipelineError(description: "region \(settings.region) is not migrated (missing: \(missing.joined(separator: ", "))); run `region-replicator migrate`")
        }
        // The messages table itself: mapped columns, types, the unique index on the id column.
        let problems = try Schema.inspect(c, table: settings.table, columns: settings.columns)
        if !problems.isEmpty {
            c.close()
            throw PipelineError(description: "region \(settings.region) cannot be applied to: \(problems.map(\.description).joined(separator: " "))")
        }
        if tables != applier.tables {
            applier = RegionApplier(region: settings.region, table: settings.table, applyToOrigin: settings.applyToOrigin, tables: tables,
                                    columns: settings.columns)
        }
        db = c
        status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: true, problem: nil)
        logger.info("connected to the region's database", metadata: ["database": "\(PostgresConnection.describe(settings.conninfo))"])
        return c
    }

    /// Connects before subscribing, retrying forever (until stop); slowly while the schema
    /// does not fit.
    private func ensureDatabase() {
        var backoff = Backoff()
        var schemaBackoff = Self.schemaBackoff()
        while !stopping {
            do {
                _ = try ensureConnectedOnce()
                return
            } catch {
                let schema = error is PipelineError || (error as? PostgresError).map { ApplyFailure.classify($0) == .schema } ?? false
                let delay = schema ? schemaBackoff.next() : backoff.next()
                status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: false,
                                        problem: schema ? "schema problem (the region stops until it is fixed): \(error)" : "\(error)")
                heartbeat()
                logger.warning("region database unavailable, retrying", metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)"])
                Backoff.wait(delay, slice: .milliseconds(500), stop: { stopping }, tick: heartbeat)
            }
        }
    }

    private func logProgressIfDue() {
        let now = ContinuousClock.now
        guard now - lastProgressLog >= .seconds(10) else { return }
        lastProgressLog = now
        logger.info("progress", metadata: ["events": "\(totals)",
                                           "next_offsets": "\(book.owned.sorted().compactMap { p in book.committed(p).map { "\(p):\($0)" } })"])
    }
}
