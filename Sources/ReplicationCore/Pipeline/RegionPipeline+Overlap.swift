import Foundation
import KafkaClient
import PostgresClient

// One chunk's transaction in the database while the pipeline reads and builds the next one.
//
// Batch N is sent without waiting (libpq pipeline mode, non-blocking); while the region's
// database works on it, the pipeline polls the consumer, decodes what arrives and builds batch
// N+1's transaction, taking in N's results as they come. N+1 is never sent before N's outcome
// is known: a failure of N is N's alone (no second transaction can fail its offset check
// behind it), and every decision after it is ApplyPolicy's, as without the overlap.
extension RegionPipeline {
    /// A chunk's transaction sent to the region's database, its outcome not read yet.
    final class InFlight {
        let chunk: Chunk
        let prepared: PreparedApply
        let sent: PostgresPipeline
        let db: PostgresConnection
        let started: ContinuousClock.Instant
        /// Read early: a revocation waited for it (``rebalanced(_:)``).
        var outcome: ChunkOutcome?

        init(chunk: Chunk, prepared: PreparedApply, sent: PostgresPipeline, db: PostgresConnection, started: ContinuousClock.Instant) {
            self.chunk = chunk
            self.prepared = prepared
            self.sent = sent
            self.db = db
            self.started = started
        }
    }

    /// The next chunk's transaction, built while the one before it was in the database, on
    /// the assumption that that one commits. Used only when the chunk it is for is exactly
    /// the one the pipeline takes after that commit (same records, progress, expected offsets,
    /// and applier).
    struct BuiltAhead {
        let chunk: Chunk
        let prepared: PreparedApply
        let applier: ObjectIdentifier
    }

    /// The records decoded while they waited behind a chunk in flight, by position.
    struct DecodedAhead {
        struct Position: Hashable {
            let partition: Int32
            let offset: Int64
        }

        private var byPosition: [Position: DecodedRecord] = [:]

        var isEmpty: Bool { byPosition.isEmpty }

        /// Decodes `records`, to be taken later. Entries never taken (records revoked or
        /// re-read meanwhile) are dropped together once there are more than `limit`.
        mutating func decode(_ records: ArraySlice<KafkaRecord>, limit: Int) {
            if byPosition.count > limit { byPosition.removeAll() }
            for r in records { put(DecodedRecord(record: r, event: EventDecoder.decode(r.value))) }
        }

        mutating func put(_ d: DecodedRecord) {
            byPosition[Position(partition: d.record.partition, offset: d.record.offset)] = d
        }

        /// `r` decoded: from here when it was decoded ahead (the very same record), else now.
        mutating func take(_ r: KafkaRecord) -> DecodedRecord {
            if let d = byPosition.removeValue(forKey: Position(partition: r.partition, offset: r.offset)),
               d.record.topic == r.topic, d.record.value == r.value, d.record.key == r.key, d.record.timestampMs == r.timestampMs {
                return d
            }
            return DecodedRecord(record: r, event: EventDecoder.decode(r.value))
        }

        mutating func removeAll() { byPosition.removeAll() }
    }

    /// The chunk of the first `records` pending, with its transaction when it was built ahead.
    func nextChunk(_ records: [KafkaRecord]) -> (Chunk, BuiltAhead?) {
        let progress = book.progress(forFirst: records.count)
        let expected = book.expectedStored(for: progress.map(\.partition))
        if let ahead = builtAhead {
            builtAhead = nil
            if ahead.chunk.progress == progress, ahead.chunk.expected == expected, ahead.chunk.records.count == records.count,
               zip(ahead.chunk.records, records).allSatisfy({ $0.partition == $1.partition && $0.offset == $1.offset }) {
                return (ahead.chunk, ahead)
            }
            for d in ahead.chunk.decoded { decodedAhead.put(d) }  // decoded all the same
        }
        return (Chunk(records, decoded: records.map { decodedAhead.take($0) }, progress: progress, expected: expected), nil)
    }

    /// Sends `chunk`'s transaction, and while the region's database works on it reads, decodes
    /// and builds what follows; then reads its outcome. A committed chunk is accounted for
    /// (``committed(_:_:started:_:)``), then the rebalances that came meanwhile are performed.
    func applyOverlapping(_ chunk: Chunk, ahead: BuiltAhead?, _ consumer: KafkaConsumer) throws -> ChunkOutcome {
        rebalancedMeanwhile = false
        let flight: InFlight
        do {
            let db = try ensureConnectedOnce()
            let prepared = ahead.flatMap { $0.applier == ObjectIdentifier(applier) ? $0.prepared : nil }
                ?? applier.prepare(chunk.decoded, progress: chunk.progress, expectedOffsets: chunk.expected,
                                   consumerGroup: settings.consumerGroup, topic: settings.topic)
            let started = ContinuousClock.now
            flight = InFlight(chunk: chunk, prepared: prepared, sent: try db.send(prepared.steps, transaction: true), db: db, started: started)
        } catch {
            return Self.failed(error)
        }
        inFlight = flight
        if !book.retrying && !stopping { try readBehind(flight, consumer) }
        let outcome = flight.outcome ?? finish(flight)
        inFlight = nil
        if case .committed(let result, let started) = outcome { committed(result, chunk, started: started, consumer) }
        let deferred = deferredRebalances
        deferredRebalances.removeAll()
        for event in deferred { _ = rebalanced(event) }
        rebalancedMeanwhile = !deferred.isEmpty
        return outcome
    }

    /// Reads `flight`'s outcome (waiting for it).
    func finish(_ flight: InFlight) -> ChunkOutcome {
        do {
            return .committed(try applier.finish(flight.prepared, flight.sent, on: flight.db), started: flight.started)
        } catch {
            return Self.failed(error)
        }
    }

    static func failed(_ error: any Error) -> ChunkOutcome {
        switch error {
        case let e as PostgresError: .failed(ApplyFailure.classify(e), e)
        case let e as PipelineError: .failed(.schema, e)  // not migrated: a table is missing
        default: .failed(.transient, error)
        }
    }

    /// While `flight` is in the database: polls the consumer for the records behind it (up to
    /// one batch's worth), decodes them, and once that batch is full builds its transaction;
    /// stops as soon as the database has answered. Never touches the database connection but
    /// to take in the answer.
    private func readBehind(_ flight: InFlight, _ consumer: KafkaConsumer) throws {
        let base = book.pending.count
        let baseBytes = book.pendingBytes
        while !stopping && deferredRebalances.isEmpty {
            if flight.db.receiveIfReady(flight.sent) { return }
            let behind = book.pending.count - base
            guard behind < settings.maxBatchEvents && book.pendingBytes - baseBytes < settings.maxBatchBytes else { break }
            heartbeat()
            let results = consumer.pollBatch(maxRecords: settings.maxBatchEvents - behind, timeoutMs: 0)
            if results.isEmpty {
                flight.db.waitForInput(milliseconds: 2)
                continue
            }
            let before = book.pending.count
            try take(results, consumer)
            if book.pending.count > before { decodedAhead.decode(book.pending[before...], limit: 4 * settings.maxBatchEvents) }
        }
        guard !stopping, deferredRebalances.isEmpty, !flight.db.receiveIfReady(flight.sent) else { return }
        buildAhead(after: flight.chunk)
    }

    /// Builds the transaction of the chunk that follows `chunk` if `chunk` commits.
    private func buildAhead(after chunk: Chunk) {
        var book = self.book
        _ = book.applySucceeded(count: chunk.count, progress: chunk.progress)
        var policy = self.policy
        _ = policy.after(.committed(records: chunk.count))
        let records = Array(book.pending.prefix(policy.chunkLimit))
        guard !records.isEmpty else { return }
        let progress = book.progress(forFirst: records.count)
        let next = Chunk(records, decoded: records.map { decodedAhead.take($0) }, progress: progress,
                         expected: book.expectedStored(for: progress.map(\.partition)))
        builtAhead = BuiltAhead(chunk: next, prepared: applier.prepare(next.decoded, progress: next.progress, expectedOffsets: next.expected,
                                                                       consumerGroup: settings.consumerGroup, topic: settings.topic),
                                applier: ObjectIdentifier(applier))
    }

    /// Takes what the consumer has ready at once (no waiting), up to a batch: after a chunk
    /// committed, what arrived meanwhile joins the records already read behind it.
    func topUp(_ consumer: KafkaConsumer) throws {
        while book.pending.count < settings.maxBatchEvents && book.pendingBytes < settings.maxBatchBytes && !stopping {
            let results = consumer.pollBatch(maxRecords: settings.maxBatchEvents - book.pending.count, timeoutMs: 0)
            if results.isEmpty { return }
            let before = book.pending.count
            try take(results, consumer)
            if book.pending.count == before { return }
        }
    }
}
