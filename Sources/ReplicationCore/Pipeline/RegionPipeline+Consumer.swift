import Foundation
import KafkaClient
import Logging

// The region's consumer: polling into the bookkeeping, performing its actions, rebalances, and
// positioning partitions at the region's stored offsets.
extension RegionPipeline {
    /// The region's group consumer; assigned partitions start paused (see ``rebalanced(_:)``).
    func makeConsumer() throws -> KafkaConsumer {
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
    func fillBatch(_ consumer: KafkaConsumer) throws {
        var deadline: ContinuousClock.Instant? = nil
        while book.pending.count < settings.maxBatchEvents && book.pendingBytes < settings.maxBatchBytes && !stopping {
            heartbeat()
            resolvePositions(consumer)
            retryPositioning(consumer)
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
                // Pending records survived a retry episode, or only markers were passed (stored alone).
                if deadline == nil && (!book.pending.isEmpty || book.hasProgressWithoutRecords) { break }
                continue
            }
            if deadline == nil { deadline = ContinuousClock.now.advanced(by: settings.maxBatchDelay) }
        }
    }

    /// Hands polled records to the bookkeeping and performs what it asks; reports errors.
    func take(_ results: [KafkaConsumer.PollResult], _ consumer: KafkaConsumer) throws {
        var records: [KafkaRecord] = []
        var ends: [TopicPartitionOffset] = []
        records.reserveCapacity(results.count)
        for result in results {
            switch result {
            case .record(let r):
                records.append(r)
            case .endOfPartition(let end):
                ends.append(end)  // past transaction markers, perhaps
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
        if !records.isEmpty || !ends.isEmpty { perform(book.polled(records, ends: ends), consumer) }
    }

    /// Performs the bookkeeping's actions on the consumer (seeks before resumes, as listed).
    func perform(_ actions: [BookkeepingAction], _ consumer: KafkaConsumer) {
        var seeks: [TopicPartitionOffset] = []
        func flushSeeks() {
            guard !seeks.isEmpty else { return }
            let refused: [(position: TopicPartitionOffset, error: KafkaError)]
            do {
                refused = try consumer.seek(seeks, timeoutMs: 5000)
            } catch {
                refused = seeks.map { ($0, error) }
            }
            seeks.removeAll()
            guard !refused.isEmpty else { return }
            for r in refused { book.seekFailed(partition: r.position.partition) }
            logger.log(level: positionRetry.attempts == 0 ? .warning : .debug,
                       "seek refused by librdkafka: the partition reads nothing until it is sought again", metadata: [
                           "positions": "\(refused.map { "\($0.position.partition)@\($0.position.offset)" })",
                           "error": "\(refused[0].error)"])
        }
        func tpo(_ p: Int32, _ offset: Int64 = 0) -> TopicPartitionOffset {
            TopicPartitionOffset(topic: settings.topic, partition: p, offset: offset)
        }
        for action in actions {
            switch action {
            case .seek(let p, .offset(let n)):
                seeks.append(tpo(p, n))
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
                let n = Int(max(0, to.saturatingSubtracting(from)))
                logger.warning("records deleted from the topic before they were applied (retention): skipped", metadata: [
                    "partition": "\(p)", "offsets": "\(from)..<\(to)", "records": "\(n)"])
                metrics.gone(n)
                status.recordsGone(region: settings.region, count: Int64(n))
                totals[.gone] += n
            case .noRecords(let p, let from, let to):
                logger.info("no records at these offsets (compaction or transaction markers)", metadata: [
                    "partition": "\(p)", "offsets": "\(from)..<\(to)"])
            case .unusableOffset(let p, let offset):
                metadataWarnings.unusableOffset(partition: p, offset: offset)
                warnAboutMetadataIfDue()
            }
        }
        flushSeeks()
    }

    /// Seeks the partitions whose seek librdkafka refused again, when the timer says so.
    func retryPositioning(_ consumer: KafkaConsumer) {
        guard positionRetry.due(needed: book.needsPositioning) else { return }
        perform(book.retryPositioning(), consumer)
        if !book.needsPositioning { positionRetry.reset() }
    }

    // MARK: - Positions from the region's stored offsets

    /// Reads the region's stored offsets for partitions assigned since the last call, and
    /// positions them (in the loop, never inside the rebalance callback). A failure is retried
    /// later with backoff; meanwhile the loop keeps polling, so the group never waits on the
    /// region's database.
    func resolvePositions(_ consumer: KafkaConsumer) {
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

    /// The region's stored offsets are not the ones this pipeline believed (a restore from
    /// backup, a manual reset, another writer): they win. Re-reads them and continues from there.
    func followStoredOffsets(_ error: any Error, _ consumer: KafkaConsumer) {
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

    // MARK: - Rebalance (called inside poll, on the pipeline thread: no I/O, no waiting)

    func rebalanced(_ event: KafkaConsumer.RebalanceEvent) -> [TopicPartitionOffset] {
        if let flight = inFlight {
            // A chunk is in the region's database: its records are the first pending ones, so the
            // bookkeeping changes once its outcome is accounted for (``applyOverlapping``). A
            // revocation waits for that outcome here: the partitions are given up only once
            // nothing of theirs can still commit.
            if case .revoked = event, flight.outcome == nil { flight.outcome = finish(flight) }
            deferredRebalances.append(event)
            if case .assigned(let parts) = event {
                return parts.map { TopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: TopicPartitionOffset.beginning) }
            }
            return []
        }
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
            departuresAtAssignment = departures?.count ?? 0
            status.assignment(region: settings.region, pipeline: settings.loopName, assigned: parts.map(\.partition))
            logger.info("partitions assigned (paused until their stored offsets are read)",
                        metadata: ["partitions": "\(parts.map(\.partition).sorted())"])
            // Started at once at the partition's beginning, never at the group's committed offset:
            // librdkafka would start those only once the coordinator answers, refusing every
            // seek until then. The loop seeks them where the region's database says.
            return parts.map { TopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: TopicPartitionOffset.beginning) }
        }
    }
}
