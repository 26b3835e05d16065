import Foundation
public import PostgresClient

/// Applies batches to one region's database: the single apply path used by the daemon (and
/// by replay and dead-letter retry).
///
/// - Important: Blocking (libpq). Run on a dedicated thread.
public final class RegionApplier: @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time (the region's pipeline thread).
    public let region: String
    public let table: TableName
    public let applyToOrigin: Bool
    public let columns: MessageColumns
    /// The bookkeeping tables every statement names (schema-qualified once resolved).
    public let tables: BookkeepingTables
    private let sql: Statements

    public init(region: String, table: TableName, applyToOrigin: Bool, tables: BookkeepingTables = .unqualified,
                columns: MessageColumns = .standard) {
        self.region = region
        self.table = table
        self.applyToOrigin = applyToOrigin
        self.tables = tables
        self.columns = columns
        self.sql = Statements(table: table, tables: tables, columns: columns)
    }

    /// Applies `records` and stores `progress` for `consumerGroup`, all in one transaction.
    ///
    /// The whole transaction — `BEGIN`, the advisory locks of its partitions, one multi-row statement per
    /// kind of event (binary array parameters), the dead letters, the offsets and `COMMIT` — goes
    /// to the server as one pipeline: one network round trip per batch.
    ///
    /// A permanent data error (SQLSTATE class 22/23) makes the batch run again under
    /// savepoints, bisected: halves that apply are kept, halves that fail are halved again, so
    /// only the records the database refuses become dead letters (about 2·log₂(n) statements
    /// for one bad record in n, not n).
    /// - Parameters:
    ///   - expectedOffsets: the next offsets the caller believes the region stores for these
    ///     partitions (nil: no row). Checked in the same transaction, under the partitions' locks:
    ///     when they differ the batch rolls back with SQLSTATE ``ApplyFailure/offsetsMovedCode``.
    ///   - dryRun: classify only; the transaction is rolled back.
    /// - Returns: the outcome of every record.
    /// - Throws: ``PostgresError`` for every other failure (nothing was committed).
    public func apply(_ records: [DecodedRecord], progress: [PartitionProgress], expectedOffsets: [Int32: Int64?] = [:],
                      consumerGroup: String?, topic: String, on db: PostgresConnection,
                      dryRun: Bool = false) throws(PostgresError) -> ApplyResult {
        let t = prepare(records, progress: progress, expectedOffsets: expectedOffsets, consumerGroup: consumerGroup, topic: topic,
                        dryRun: dryRun)
        return try finish(t, db.send(t.steps, transaction: true), on: db)
    }

    /// ``apply(_:progress:expectedOffsets:consumerGroup:topic:on:dryRun:)`` in three steps, for
    /// a caller that works while the transaction is in the database: `prepare` builds it (no
    /// database), `send` it on the connection, then `finish` reads its outcome.
    public func prepare(_ records: [DecodedRecord], progress: [PartitionProgress], expectedOffsets: [Int32: Int64?],
                        consumerGroup: String?, topic: String, dryRun: Bool = false) -> PreparedApply {
        pipelineTransaction(records, progress: progress, expectedOffsets: expectedOffsets, group: consumerGroup, topic: topic,
                            dryRun: dryRun)
    }

    /// Reads the outcome of `t`, sent as `sent`: as ``apply(_:progress:expectedOffsets:consumerGroup:topic:on:dryRun:)``
    /// (a data error isolates the refused records in a transaction of their own).
    public func finish(_ t: PreparedApply, _ sent: PostgresPipeline, on db: PostgresConnection) throws(PostgresError) -> ApplyResult {
        do throws(PostgresError) {
            let results = try db.receive(sent)
            var result = ApplyResult()
            for (i, w) in t.work.enumerated() { account(results[t.at[i]], into: &result, total: w.total, timestamps: w.timestamps) }
            result.counts = result.counts + t.plan.decided
            return result
        } catch let error where error.isDataError {
            return try transaction(db, lock: t.lock, dryRun: t.dryRun) { () throws(PostgresError) in
                if !t.check.isEmpty { _ = try db.pipeline(t.check) }
                return try applyIsolated(t.records, rejectedBy: error, progress: t.progress, group: t.group, topic: t.topic, on: db)
            }
        }
    }

    /// The statements ``apply(_:progress:expectedOffsets:consumerGroup:topic:on:dryRun:)`` sends
    /// first, built without a database (the metadata fuzzer builds them from hostile records).
    @_spi(Fuzzing) public func statements(_ records: [DecodedRecord], progress: [PartitionProgress], expectedOffsets: [Int32: Int64?],
                                         consumerGroup: String?, topic: String) -> [PostgresStatement] {
        pipelineTransaction(records, progress: progress, expectedOffsets: expectedOffsets, group: consumerGroup, topic: topic,
                            dryRun: false).steps
    }

    /// One transaction as one pipeline: `BEGIN`, the locks, the offset check, the plan's
    /// statements (each one's own result at `at`), the dead letters, the offsets, `COMMIT` or
    /// `ROLLBACK`.
    private func pipelineTransaction(_ records: [DecodedRecord], progress: [PartitionProgress], expectedOffsets: [Int32: Int64?],
                                     group: String?, topic: String, dryRun: Bool) -> PreparedApply {
        let plan = ApplyPlan(records: records, region: region, applyToOrigin: applyToOrigin)
        let check = offsetCheckStatements(expectedOffsets, group: group, topic: topic)
        let lock = lockStatements(ApplyLocks(plan: plan, partitions: progress.map(\.partition) + expectedOffsets.keys,
                                             recordPartitions: records.map(\.record.partition)))
        var steps = [PostgresStatement("BEGIN")] + lock + check
        let work = planStatements(plan)
        let at = Work.append(work, to: &steps)
        if let dl = deadLetterStatement(plan.deadLetters) { steps.append(dl) }
        if let off = progressStatement(progress, group: group, topic: topic) { steps.append(off) }
        steps.append(PostgresStatement(dryRun ? "ROLLBACK" : "COMMIT"))
        return PreparedApply(steps: steps, plan: plan, work: work, at: at, lock: lock, check: check, records: records,
                             progress: progress, group: group, topic: topic, dryRun: dryRun)
    }

    // MARK: - Transactions

    private func transaction(_ db: PostgresConnection, lock: [PostgresStatement], dryRun: Bool,
                             _ body: () throws(PostgresError) -> ApplyResult) throws(PostgresError) -> ApplyResult {
        try db.execute("BEGIN")
        do {
            _ = try db.pipeline(lock)
            let result = try body()
            try db.execute(dryRun ? "ROLLBACK" : "COMMIT")
            return result
        } catch {
            if db.isOpen { try? db.execute("ROLLBACK") }
            throw error
        }
    }

    /// Isolates the records the database refuses by bisection under savepoints (the whole
    /// batch already failed): each half is tried in one round trip (`SAVEPOINT`, its
    /// statements, `RELEASE`); a half that fails is rolled back and halved again, down to the
    /// single records that become dead letters.
    private func applyIsolated(_ records: [DecodedRecord], rejectedBy error: PostgresError, progress: [PartitionProgress], group: String?,
                               topic: String, on db: PostgresConnection) throws(PostgresError) -> ApplyResult {
        var result = ApplyResult()
        var dead: [DeadLetter] = []
        try isolate(records[...], rejectedBy: error, on: db, into: &result, dead: &dead)
        if let dl = deadLetterStatement(dead) { try db.query(dl.sql, parameters: dl.parameters) }
        if let off = progressStatement(progress, group: group, topic: topic) { try db.query(off.sql, parameters: off.parameters) }
        return result
    }

    /// `records` failed as a whole with `error`: dead-letter it when it is one record, else try each half.
    private func isolate(_ records: ArraySlice<DecodedRecord>, rejectedBy error: PostgresError, on db: PostgresConnection,
                         into result: inout ApplyResult, dead: inout [DeadLetter]) throws(PostgresError) {
        if records.count == 1, let r = records.first {
            if error.code.raw == ApplyFailure.identityChangedCode {
                // The message is the reason (`identity_changed: …`), the server's own text.
                dead.append(DeadLetter(record: r.record, error: error.message))
                result.identityChanges += 1
            } else {
                dead.append(DeadLetter(record: r.record, error: "rejected by the region's database: \(error)"))
            }
            result.counts[.deadLettered] += 1
            return
        }
        let mid = records.startIndex + records.count / 2
        try attempt(records[..<mid], on: db, into: &result, dead: &dead)
        try attempt(records[mid...], on: db, into: &result, dead: &dead)
    }

    /// Applies `records` under a savepoint in one round trip; on a data error rolls back to it
    /// and isolates the refused records.
    private func attempt(_ records: ArraySlice<DecodedRecord>, on db: PostgresConnection,
                         into result: inout ApplyResult, dead: inout [DeadLetter]) throws(PostgresError) {
        let plan = ApplyPlan(records: records, region: region, applyToOrigin: applyToOrigin)
        guard plan.pendingCount > 0 else {
            dead += plan.deadLetters
            result.counts = result.counts + plan.decided
            return
        }
        let work = planStatements(plan)
        do throws(PostgresError) {
            var steps = [PostgresStatement("SAVEPOINT bisect")]
            let at = Work.append(work, to: &steps)
            steps.append(PostgresStatement("RELEASE SAVEPOINT bisect"))
            let results = try db.pipeline(steps)
            for (i, w) in work.enumerated() { account(results[at[i]], into: &result, total: w.total, timestamps: w.timestamps) }
            dead += plan.deadLetters
            result.counts = result.counts + plan.decided
        } catch let error where error.isDataError {
            try db.execute("ROLLBACK TO SAVEPOINT bisect; RELEASE SAVEPOINT bisect")
            try isolate(records, rejectedBy: error, on: db, into: &result, dead: &dead)
        }
    }

    /// Writes `records` as dead letters with `error` and stores `progress`, in one transaction
    /// checked like ``apply(_:progress:expectedOffsets:consumerGroup:topic:on:dryRun:)`` (a record
    /// the region's database cannot take even alone, e.g. too large).
    public func deadLetter(_ records: [DecodedRecord], error: String, progress: [PartitionProgress],
                           expectedOffsets: [Int32: Int64?], consumerGroup: String, topic: String,
                           on db: PostgresConnection) throws(PostgresError) -> ApplyResult {
        var steps = [PostgresStatement("BEGIN")] + lockStatements(ApplyLocks(plan: ApplyPlan(records: [], region: region, applyToOrigin: applyToOrigin),
                                                                             partitions: progress.map(\.partition) + expectedOffsets.keys,
                                                                             recordPartitions: records.map(\.record.partition)))
        steps += offsetCheckStatements(expectedOffsets, group: consumerGroup, topic: topic)
        if let dl = deadLetterStatement(records.map { DeadLetter(record: $0.record, error: error) }) { steps.append(dl) }
        if let off = progressStatement(progress, group: consumerGroup, topic: topic) { steps.append(off) }
        steps.append(PostgresStatement("COMMIT"))
        _ = try db.pipelineTransaction(steps)
        var result = ApplyResult()
        result.counts[.deadLettered] = records.count
        return result
    }

    /// The advisory locks of a transaction, first in it (``ApplyLocks``, docs/design.md): the
    /// table's key shared, then the keys of `locks` — the buckets of the sessions and messages
    /// it writes, the partitions whose offsets it checks or stores — in their one global order,
    /// in one statement. A deletion and an upsert of one message or session serialise whichever
    /// partitions, tools or instances they came through; `verify --repair` takes the table's
    /// key exclusively and waits for all.
    private func lockStatements(_ locks: ApplyLocks) -> [PostgresStatement] {
        let keys = locks.sorted
        guard !keys.isEmpty else { return [PostgresStatement(sql.sharedLock)] }
        var spaces = PostgresBinaryArray(.int4), numbers = PostgresBinaryArray(.int4), exclusive = PostgresBinaryArray(.int4)
        for k in keys {
            spaces.append(int4: k.key.space.rawValue)
            numbers.append(int4: k.key.number)
            exclusive.append(int4: k.exclusive ? 1 : 0)
        }
        return [PostgresStatement(sql.sharedLock), PostgresStatement(sql.rowLocks, [spaces.parameter, numbers.parameter, exclusive.parameter])]
    }

    /// Statements that fail the transaction with SQLSTATE ``ApplyFailure/offsetsMovedCode``
    /// unless the region stores exactly `expected` for its partitions (nil: no row).
    private func offsetCheckStatements(_ expected: [Int32: Int64?], group: String?, topic: String) -> [PostgresStatement] {
        guard let group, !expected.isEmpty else { return [] }
        let list = expected.sorted { $0.key < $1.key }.map { p, n in "\(p):\(n.map(String.init) ?? "")" }.joined(separator: ",")
        return [PostgresStatement("""
                    SELECT set_config('region_replicator.expected_offsets', $1, true),
                           set_config('region_replicator.consumer_group', $2, true),
                           set_config('region_replicator.topic', $3, true)
                    """, [.text(list), .text(group), .text(topic)]),
                PostgresStatement(sql.offsetCheck)]
    }

    // MARK: - The set operations

    /// One statement of a plan, with what its result is accounted against, and the statement
    /// that must follow it (the identity check after an upsert).
    struct Work {
        var statement: PostgresStatement
        var total: Int
        var timestamps: [Int64?]
        var followedBy: PostgresStatement? = nil

        /// Appends every statement of `work` to `steps`; returns where each work's own result is.
        static func append(_ work: [Work], to steps: inout [PostgresStatement]) -> [Int] {
            work.map { w in
                steps.append(w.statement)
                let at = steps.count - 1
                if let next = w.followedBy { steps.append(next) }
                return at
            }
        }
    }

    /// Each statement returns `applied`, `same_version` (duplicates) and `applied_ordinals` (the
    /// ordinalities of the applied rows); when every row applied it skips the two counting
    /// subqueries and answers (total, 0, NULL). The counts are a reply, read defensively: a
    /// missing or out-of-range figure counts as 0, and no figure exceeds the statement's rows.
    private func account(_ r: PostgresResult, into result: inout ApplyResult, total: Int, timestamps: [Int64?]) {
        let row = r.namedRows.first
        let applied = min(max(row?.integer("applied") ?? 0, 0), total)
        let same = min(max(row?.integer("same_version") ?? 0, 0), total - applied)
        result.counts[.applied] += applied
        result.counts[.duplicate] += same
        result.counts[.stale] += total - applied - same
        let ordinals = row?["applied_ordinals"]
        if applied == total, ordinals == nil {
            result.appliedTimestampsMs += timestamps.prefix(total).compactMap { $0 }
        } else if let list = ordinals {
            for i in list.split(separator: ",") {
                if let i = Int(i), i >= 1, i <= timestamps.count, let ts = timestamps[i - 1] {
                    result.appliedTimestampsMs.append(ts)
                }
            }
        }
    }

    private func planStatements(_ plan: ApplyPlan) -> [Work] {
        var work: [Work] = []
        if !plan.sessionTombstones.isEmpty {
            let s = plan.sessionTombstones
            var ids = PostgresBinaryArray(.text), at = PostgresBinaryArray(.timestamptz)
            for x in s {
                ids.append(text: x.sessionID)
                at.append(timestamptzMicroseconds: x.occurredAt.microseconds)
            }
            work.append(Work(statement: PostgresStatement(sql.sessionTombstones, [ids.parameter, at.parameter]),
                             total: s.count, timestamps: plan.sessionTombstoneTimestamps))
        }
        if !plan.messageTombstones.isEmpty {
            let d = plan.messageTombstones
            var ids = PostgresBinaryArray(.uuid), sessions = PostgresBinaryArray(.text)
            var versions = PostgresBinaryArray(.int8), at = PostgresBinaryArray(.timestamptz)
            for x in d {
                ids.append(uuid: x.messageID)
                sessions.append(text: x.sessionID)
                versions.append(int8: x.version)
                at.append(timestamptzMicroseconds: x.occurredAt.microseconds)
            }
            work.append(Work(statement: PostgresStatement(sql.messageTombstones,
                                                          [ids.parameter, sessions.parameter, versions.parameter, at.parameter]),
                             total: d.count, timestamps: plan.messageTombstoneTimestamps))
        }
        if !plan.upserts.isEmpty {
            work.append(upsertWork(plan.upserts, timestamps: plan.upsertTimestamps))
        }
        // Equal versions with different content: one statement per round, after the first, so
        // that the database's tie-break (`ContentHash`) decides, never the arrival order.
        for round in plan.tieRounds {
            work.append(upsertWork(round.map(\.upsert), timestamps: round.map(\.timestampMs)))
        }
        return work
    }

    private func upsertWork(_ unsorted: [MessageUpsert], timestamps unsortedTimestamps: [Int64?]) -> Work {
        // In message id order: writers that upsert the same messages at once (upserts share
        // their locks) then take the rows' locks in one order and cannot deadlock on them.
        let order = unsorted.indices.sorted { Self.precedes(unsorted[$0].messageID, unsorted[$1].messageID) }
        let u = order.map { unsorted[$0] }
        let timestamps = order.map { $0 < unsortedTimestamps.count ? unsortedTimestamps[$0] : nil }
        let contentBytes = u.reduce(0) { $0 + $1.content.utf8.count + 4 }
        var ids = PostgresBinaryArray(.uuid, reservingBytes: 20 * u.count)
        var sessions = PostgresBinaryArray(.text, reservingBytes: 24 * u.count)
        var roles = PostgresBinaryArray(.text, reservingBytes: 14 * u.count)
        var contents = PostgresBinaryArray(.text, reservingBytes: contentBytes)
        var regions = PostgresBinaryArray(.text, reservingBytes: 20 * u.count)
        var created = PostgresBinaryArray(.timestamptz, reservingBytes: 12 * u.count)
        var versions = PostgresBinaryArray(.int8, reservingBytes: 12 * u.count)
        var attributes = PostgresBinaryArray(.text, reservingBytes: 4 * u.count)
        for x in u {
            ids.append(uuid: x.messageID)
            sessions.append(text: x.sessionID)
            roles.append(text: x.role.rawValue)
            contents.append(text: x.content)
            regions.append(text: x.originRegion)
            created.append(timestamptzMicroseconds: x.createdAt.microseconds)
            versions.append(int8: x.version)
            if let a = x.attributes, columns.attributes != nil { attributes.append(text: a) } else { attributes.appendNull() }
        }
        return Work(statement: PostgresStatement(sql.upserts, [
            ids.parameter, sessions.parameter, roles.parameter, contents.parameter,
            regions.parameter, created.parameter, versions.parameter, attributes.parameter,
        ]), total: u.count, timestamps: timestamps, followedBy: PostgresStatement(sql.identityCheck))
    }

    /// Byte order of two message ids (the order of PostgreSQL's `uuid`).
    private static func precedes(_ a: UUID, _ b: UUID) -> Bool {
        withUnsafeBytes(of: a.uuid) { x in withUnsafeBytes(of: b.uuid) { y in x.lexicographicallyPrecedes(y) } }
    }

    private func deadLetterStatement(_ dead: [DeadLetter]) -> PostgresStatement? {
        guard !dead.isEmpty else { return nil }
        var topics = PostgresBinaryArray(.text), partitions = PostgresBinaryArray(.int4)
        var offsets = PostgresBinaryArray(.int8), keys = PostgresBinaryArray(.bytea)
        var values = PostgresBinaryArray(.bytea), errors = PostgresBinaryArray(.text)
        for d in dead {
            topics.append(text: d.record.topic)
            partitions.append(int4: d.record.partition)
            offsets.append(int8: d.record.offset)
            if let k = d.record.key { keys.append(bytes: k) } else { keys.appendNull() }
            if let v = d.record.value { values.append(bytes: v) } else { values.appendNull() }
            errors.append(text: String(d.error.prefix(2000)))
        }
        return PostgresStatement(sql.deadLetters, [topics.parameter, partitions.parameter, offsets.parameter,
                                                   keys.parameter, values.parameter, errors.parameter])
    }

    private func progressStatement(_ progress: [PartitionProgress], group: String?, topic: String) -> PostgresStatement? {
        guard let group, !progress.isEmpty else { return nil }
        var partitions = PostgresBinaryArray(.int4), next = PostgresBinaryArray(.int8)
        var last = PostgresBinaryArray(.timestamptz)
        for p in progress {
            partitions.append(int4: p.partition)
            next.append(int8: p.nextOffset)
            // A timestamp outside 0 … year 9999 (nanoseconds for milliseconds, garbage) is stored as unknown.
            if let us = KafkaTimestamp.storedMicroseconds(p.lastRecordMs) { last.append(timestamptzMicroseconds: us) } else { last.appendNull() }
        }
        return PostgresStatement(sql.offsets, [.text(group), .text(topic), partitions.parameter, next.parameter, last.parameter])
    }

    // MARK: - Stored offsets

    /// The next offsets stored for `group` in this region (partitions without a row are absent).
    /// `table`: the offsets table as ``Schema/check(_:table:)`` resolved it on this connection.
    public static func storedOffsets(group: String, topic: String, table: String,
                                     on db: PostgresConnection) throws(PostgresError) -> [Int32: Int64] {
        let r = try db.query("SELECT partition, next_offset FROM \(table) WHERE consumer_group = $1 AND topic = $2",
                             [group, topic])
        var out: [Int32: Int64] = [:]
        for row in r.namedRows {
            if let p = row.integer("partition", as: Int32.self), let n = row.integer("next_offset", as: Int64.self) { out[p] = n }
        }
        return out
    }
}
