public import PostgresClient

// MARK: - Retrying dead letters

/// Re-applies dead letters through ``RegionApplier`` (consumer group nil: no offsets move).
///
/// The applier records a record that fails again as a dead letter with `ON CONFLICT DO NOTHING`
/// on (topic, partition, offset), which would keep the old error. So each retry applies the
/// record under a *probe* position — the same topic and partition, offset `-id` (real offsets
/// are never negative) — and the new error is moved from the probe row onto the original row in
/// one statement. A crash in between leaves at most a probe row, removed by the next retry;
/// nothing is lost.
public struct DeadLetterRetrier {
    let applier: RegionApplier
    let db: PostgresConnection

    /// What a retry did: dead letters resolved, still failing, and the outcomes of the events.
    public struct Summary: Sendable {
        public var resolved: Int
        public var failed: Int
        public var counts: OutcomeCounts
    }

    /// - Parameters:
    ///   - applier: the region's applier (its table and `apply_to_origin`).
    ///   - db: a connection to the region's database.
    /// - Important: Blocking (libpq): call it off Swift's cooperative pool.
    public init(applier: RegionApplier, db: PostgresConnection) {
        self.applier = applier
        self.db = db
    }

    /// Retries every unresolved dead letter, or only the one with `id`, in offset order, one
    /// apply each; those that now apply are marked resolved, the others get `retried_at` and
    /// their new error.
    public func retry(id: Int64?) throws(PostgresError) -> Summary {
        let deadLetters = applier.tables.deadLetters
        try db.query(#"DELETE FROM \#(deadLetters) WHERE "offset" < 0"#)  // probes left by a crash
        let rows = try db.query("""
            SELECT id, topic, partition, "offset", encode(record_key, 'hex'), encode(payload, 'hex'),
                   record_key IS NULL, payload IS NULL
            FROM \(deadLetters)
            WHERE NOT resolved AND ($1::bigint IS NULL OR id = $1::bigint)
            ORDER BY topic, partition, "offset"
            """, [id.map(String.init)]).rows
        var resolved = 0
        var failed = 0
        var counts = OutcomeCounts()
        for r in rows {
            guard let id = Int64(r[0] ?? ""), let topic = r[1], let partition = Int32(r[2] ?? "") else { continue }
            // The probe's offset is -id: only a positive id (every id the table's sequence gives)
            // has one that no real record holds. A row with another id was not written by the
            // daemon; it is left as it is and counts as failed.
            guard id > 0 else {
                failed += 1
                continue
            }
            let key: [UInt8]? = r[6] == "t" ? nil : Hex.decode(r[4] ?? "")
            let value: [UInt8]? = r[7] == "t" ? nil : Hex.decode(r[5] ?? "")
            let probe = RecordRef(topic: topic, partition: partition, offset: -id, key: key, value: value, timestampMs: nil)
            let result = try applier.apply([DecodedRecord(record: probe, event: EventDecoder.decode(value))],
                                           progress: [], consumerGroup: nil, topic: topic, on: db)
            counts = counts + result.counts
            if result.counts[.deadLettered] == 0 {
                try db.query("UPDATE \(deadLetters) SET resolved = true, retried_at = now() WHERE id = $1", [String(id)])
                resolved += 1
            } else {
                try db.query("""
                    WITH probe AS (DELETE FROM \(deadLetters) WHERE topic = $2 AND partition = $3 AND "offset" = $4
                                   RETURNING error)
                    UPDATE \(deadLetters) SET retried_at = now(), error = coalesce((SELECT error FROM probe), error)
                    WHERE id = $1
                    """, [String(id), topic, String(partition), String(-id)])
                failed += 1
            }
        }
        return Summary(resolved: resolved, failed: failed, counts: counts)
    }
}

