import Foundation
import KafkaClient
import Logging
import PostgresClient

extension RegionCapture {
    /// How often the slot's confirmed position is reported while it moves, and at the longest
    /// between two reports (the walsender ends a silent client after `wal_sender_timeout`).
    static let statusInterval: Duration = .seconds(1)
    static let idleStatusInterval: Duration = .seconds(10)
    /// How long a stopping capture waits for outstanding acknowledgements.
    static let drainLimit: Duration = .seconds(5)
    /// How often the slot's state and retained WAL are read while streaming.
    static let slotSampleInterval: Duration = .seconds(5)
    /// How often an instance standing by (the slot streamed elsewhere) tries to take it over.
    static let standbyRetry: Duration = .seconds(1)

    /// One streaming session: checks the region, streams the slot from its confirmed position,
    /// publishes, confirms. Returns only by throwing (``Stopping`` when asked to stop).
    func session(_ producer: KafkaProducer) throws {
        // The session's own SQL connection: the checks, then the slot's samples.
        let db = try PostgresConnection(conninfo: settings.conninfo, applicationName: "region-replicator capture \(settings.region) (slot monitor)")
        defer { db.close() }
        try sampleSlot(db)
        let ready = try CaptureSchema.inspect(db, table: settings.table, slot: settings.slot, publication: settings.publication)
        let stream = try PostgresReplicationStream(conninfo: settings.conninfo, applicationName: "region-replicator capture \(settings.region)")
        defer { stream.close() }
        var options = [("proto_version", "1"), ("publication_names", settings.publication)]
        // The session erasures of `replicator_erase_session` (logical messages; Postgres 14+).
        if ready.sendsMessages { options.append(("messages", "true")) }
        let started = Result { () throws(PostgresError) in
            try stream.startLogical(slot: settings.slot, start: 0, options: options)
        }
        if case .failure(let error) = started {
            // object_in_use: "replication slot ... is active for PID n".
            if error.code.raw == "55006" { throw SlotBusy(message: error.message) }
            throw error
        }
        var s = Session(checkpoint: CaptureCheckpoint(start: ready.confirmed, firstToken: nextToken), tableOID: ready.tableOID,
                        schema: ready.schema, name: ready.name, reported: ready.confirmed, db: db)
        logger.info("capture streaming the slot", metadata: ["slot": "\(settings.slot)", "from": "\(ready.confirmed)"])
        reporter.streaming(nil)
        reporter.confirmed(ready.confirmed)
        defer { nextToken = s.checkpoint.nextToken }
        while true {
            heartbeat()
            if stopping {
                drain(producer, stream, &s)
                throw Stopping()
            }
            try serveDeliveries(producer, &s, timeoutMs: 0)
            try reportIfDue(stream, &s)
            try sampleIfDue(&s)
            // The messages the socket holds (up to a bound), then the deliveries again. It waits
            // only when there is none, and wakes as soon as a delivery report arrives, so an
            // acknowledgement (the lag histogram, the slot's confirmation) is seen at once.
            var timeout = Self.receiveTimeout
            for _ in 0..<Self.messagesPerTurn {
                guard let message = try stream.receive(timeout: timeout, wakeOn: producer.deliveryWakeFD) else { break }
                timeout = .zero
                switch message {
                case .keepalive(let end, _, let replyRequested):
                    s.checkpoint.keepalive(walEnd: LSN(end))
                    if replyRequested { try report(stream, &s) }
                case .xlogData(_, _, _, let data):
                    try handle(try PgOutputMessage(decoding: data), producer, stream, &s)
                }
            }
        }
    }

    /// The longest wait for the server when nothing arrives (no delivery report wakes it
    /// without a wake-up pipe), and how many messages one loop turn handles at most.
    static let receiveTimeout: Duration = .milliseconds(100)
    static let messagesPerTurn = 256

    /// A session's state.
    struct Session {
        var checkpoint: CaptureCheckpoint
        var tableOID: UInt32
        var schema: String
        var name: String
        /// Each relation's column layout (or why it has none), made once per relation message.
        var layouts: [UInt32: Result<CaptureEventMapper.Layout, UnpublishableChange>] = [:]
        var tx: CaptureEventMapper.Transaction?
        /// The open transaction was written by the applier (its replication origin).
        var echo = false
        /// The position last reported to the server, and when.
        var reported: LSN
        var reportedAt = ContinuousClock.now
        /// The session's SQL connection (slot samples) and when the slot was last read.
        var db: PostgresConnection
        var sampledAt = ContinuousClock.now
        /// The commit time (unix µs, as sent) of the transaction of each unacknowledged event.
        var commitTimes: [UInt64: Int64] = [:]
    }

    private func handle(_ m: PgOutputMessage, _ producer: KafkaProducer, _ stream: PostgresReplicationStream,
                        _ s: inout Session) throws {
        switch m {
        case .begin(let b):
            try s.checkpoint.begin()
            s.tx = CaptureEventMapper.Transaction(commitLSN: b.finalLSN, commitTime: b.commitTimestamp)
            s.echo = false
        case .origin(let o):
            if ApplierOrigin.isApplier(o.name) { s.echo = true }
        case .commit(let c):
            try s.checkpoint.commit(end: c.endLSN)
            if s.echo {
                counts.echoes += 1
                reporter.echoTransaction()
            } else {
                counts.transactions += 1
            }
            s.tx = nil
        case .relation(let r):
            s.layouts[r.oid] = Result { () throws(UnpublishableChange) in try mapper.layout(r) }
            // The table was dropped and created again: follow it by name.
            if r.namespace == s.schema && r.name == s.name { s.tableOID = r.oid }
        case .insert(let oid, _), .update(let oid, _, _), .delete(let oid, _):
            guard oid == s.tableOID, !s.echo else { return }
            guard var tx = s.tx, let layout = s.layouts[oid] else {
                throw PgOutputError(offset: 0, problem: "a row change before its transaction or its relation")
            }
            do {
                let mapped = try mapper.map(m, layout: try layout.get(), in: &tx)
                s.tx = tx
                if let note = mapped.note {
                    logger.warning("change published with a note", metadata: ["note": "\(note)", "commit_lsn": "\(tx.commitLSN)",
                                                                                "message_id": "\(mapped.events.last?.messageID ?? "?")"])
                }
                for event in mapped.events { try publish(event, producer, stream, &s) }
            } catch let e as UnpublishableChange {
                counts.unpublishable += 1
                reporter.changeUnpublishable()
                logger.error("change of the messages table not published", metadata: [
                    "reason": "\(e.reason.rawValue)", "detail": "\(e.detail)", "message_id": "\(e.messageID ?? "?")",
                    "commit_lsn": "\(tx.commitLSN)"])
            }
        case .truncate(let t):
            guard t.relations.contains(s.tableOID), !s.echo else { return }
            counts.unpublishable += 1
            reporter.changeUnpublishable()
            logger.error("TRUNCATE of the messages table is not published (there is no event for it): the other regions keep their rows",
                         metadata: ["reason": "\(UnpublishableChange.Reason.truncate.rawValue)",
                                    "commit_lsn": "\(s.tx.map { "\($0.commitLSN)" } ?? "?")"])
        case .message(let lm):
            guard lm.transactional, lm.prefix == CaptureSchema.sessionErasurePrefix, !s.echo, var tx = s.tx else { return }
            do {
                let mapped = try mapper.erasure(lm.content, in: &tx)
                s.tx = tx
                for event in mapped.events { try publish(event, producer, stream, &s) }
            } catch let e as UnpublishableChange {
                counts.unpublishable += 1
                logger.error("session erasure not published", metadata: [
                    "reason": "\(e.reason.rawValue)", "detail": "\(e.detail)", "commit_lsn": "\(tx.commitLSN)"])
            }
        case .type:
            break
        }
    }

    /// Hands one event to the producer, serving acknowledgements and the server while the
    /// producer's local queue is full.
    private func publish(_ event: CapturedEvent, _ producer: KafkaProducer, _ stream: PostgresReplicationStream,
                         _ s: inout Session) throws {
        let token = try s.checkpoint.produced()
        while try !producer.enqueue(topic: settings.topic, key: event.key, value: event.value,
                                    timestampMs: event.timestampMs, token: token) {
            heartbeat()
            if stopping { throw Stopping() }
            try serveDeliveries(producer, &s, timeoutMs: 100)
            try reportIfDue(stream, &s)
            try sampleIfDue(&s)
        }
        if let at = s.tx?.commitTime { s.commitTimes[token] = at.microseconds }
        counts.published += 1
        reporter.eventCaptured()
    }

    /// Takes the producer's acknowledgements into the checkpoint. A delivery that failed ends
    /// the session: the event is sent again from the slot.
    private func serveDeliveries(_ producer: KafkaProducer, _ s: inout Session, timeoutMs: Int32) throws {
        for d in producer.pollDeliveries(timeoutMs: timeoutMs) {
            if let error = d.error {
                // An event of an earlier session is sent again by this one anyway.
                if s.checkpoint.isOutstanding(d.token) { throw error }
                continue
            }
            if s.checkpoint.acknowledged(d.token) {
                counts.acknowledged += 1
                reporter.eventPublished(commitMicros: s.commitTimes.removeValue(forKey: d.token))
            }
        }
        if let fatal = producer.fatalError { throw fatal }
    }

    private func reportIfDue(_ stream: PostgresReplicationStream, _ s: inout Session) throws {
        let since = ContinuousClock.now - s.reportedAt
        if (s.checkpoint.confirmed > s.reported && since >= Self.statusInterval) || since >= Self.idleStatusInterval {
            try report(stream, &s)
        }
    }

    /// Tells the server the position the slot may confirm.
    private func report(_ stream: PostgresReplicationStream, _ s: inout Session) throws {
        let lsn = s.checkpoint.confirmed
        try stream.sendStatus(written: lsn.value, flushed: lsn.value, applied: lsn.value)
        if lsn > s.reported { logger.debug("confirmed", metadata: ["lsn": "\(lsn)", "unacknowledged": "\(s.checkpoint.unacknowledged)"]) }
        s.reported = lsn
        s.reportedAt = ContinuousClock.now
        reporter.confirmed(lsn)
    }

    private func sampleIfDue(_ s: inout Session) throws {
        guard ContinuousClock.now - s.sampledAt >= Self.slotSampleInterval else { return }
        s.sampledAt = ContinuousClock.now
        try sampleSlot(s.db)
    }

    /// Reads the slot's state into the metrics and `/lag`. A slot invalidated by the server
    /// (`wal_status = lost`) can never stream again: said loudly, with the runbook, and the
    /// session ends (retried slowly until a person recreated the slot).
    func sampleSlot(_ db: PostgresConnection) throws {
        let state = try SlotState.read(db, slot: settings.slot)
        reporter.slot(state)
        if let state, state.lost {
            logger.error("capture slot invalidated (wal_status = lost): the changes since its confirmed position were never published; follow the runbook \"A capture slot is lost\" in docs/operations.md (recreate the slot with `region-replicator migrate`, then `verify --repair`)",
                         metadata: ["slot": "\(settings.slot)", "confirmed_lsn": "\(state.confirmed.map { "\($0)" } ?? "?")"])
            throw CaptureSchema.Problem(description: "replication slot \(settings.slot) was invalidated (wal_status = lost): see \"A capture slot is lost\" in docs/operations.md")
        }
    }

    /// Stopping: waits a little for outstanding acknowledgements, then confirms what it may.
    private func drain(_ producer: KafkaProducer, _ stream: PostgresReplicationStream, _ s: inout Session) {
        let until = ContinuousClock.now.advanced(by: Self.drainLimit)
        while s.checkpoint.unacknowledged > 0 && ContinuousClock.now < until {
            do { try serveDeliveries(producer, &s, timeoutMs: 100) } catch { break }
        }
        try? report(stream, &s)
    }
}
