import Foundation
public import KafkaClient
import PostgresClient
import Synchronization

// MARK: - Inputs and outputs

/// One end of a replay range.
public enum ReplayBound: Sendable, Hashable {
    /// A Kafka offset (applies to every selected partition).
    case offset(Int64)
    /// A Kafka record timestamp.
    case time(Timestamp)
}

/// What to replay, where, and how.
///
/// Ranges are **half-open** per partition: `from` is inclusive, `to` is exclusive
/// (`--from-offset 100 --to-offset 200` replays offsets 100…199; `--from-time A --to-time B`
/// replays records with A ≤ timestamp < B), so consecutive ranges tile without overlap. Without
/// `to`, a replay ends at each partition's high watermark as read when the job starts; records
/// produced later are the daemon's business.
public struct ReplayRequest: Sendable {
    public var region: String
    /// libpq conninfo (may hold a password; never printed).
    public var conninfo: String
    public var kafka: KafkaConfiguration
    public var topic: String
    public var table: TableName
    /// Event field → column of ``table``.
    public var columns: MessageColumns = .standard
    public var applyToOrigin: Bool
    public var maxBatchEvents: Int
    public var from: ReplayBound
    public var to: ReplayBound?
    /// Only this partition (nil: every partition of the topic).
    public var partition: Int32?
    /// Read and classify, write nothing to the region's tables.
    public var dryRun: Bool

    public init(region: String, conninfo: String, kafka: KafkaConfiguration, topic: String, table: TableName,
                applyToOrigin: Bool, maxBatchEvents: Int, from: ReplayBound, to: ReplayBound?, partition: Int32?,
                dryRun: Bool) {
        self.region = region
        self.conninfo = conninfo
        self.kafka = kafka
        self.topic = topic
        self.table = table
        self.applyToOrigin = applyToOrigin
        self.maxBatchEvents = maxBatchEvents
        self.from = from
        self.to = to
        self.partition = partition
        self.dryRun = dryRun
    }
}

/// The offsets one partition's replay covers, resolved at start.
public struct ReplayPartitionRange: Sendable, Hashable {
    public var partition: Int32
    /// First offset read (inclusive).
    public var start: Int64
    /// First offset not read (exclusive).
    public var end: Int64
    /// Records with a timestamp below this (ms) are skipped: the `--from-time` fallback.
    public var skipBeforeMs: Int64?
    /// Records with a timestamp at or above this (ms) are skipped: the `--to-time` fallback.
    public var skipFromMs: Int64?

    public var count: Int64 { max(0, end - start) }
}

/// A progress report (on the replay thread: keep the callback short).
public struct ReplayProgress: Sendable {
    /// `scan` (the first pass of a dry run) or `apply`.
    public var phase: String
    /// Offsets consumed so far in this phase (records skipped by timestamp included).
    public var done: Int64
    /// Offsets the phase will consume.
    public var total: Int64
    /// Offsets per second over the phase so far.
    public var rate: Double
    public var counts: OutcomeCounts
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var region: String
    public var dryRun: Bool
    /// Records handed to the apply path (inside the range, after any timestamp filter).
    public var read = 0
    /// Records read but outside the time bounds (the offsets-for-times fallback only).
    public var skippedByTimestamp = 0
    public var counts = OutcomeCounts()
    public var partitions: [ReplayPartitionRange] = []
    /// Partitions whose time bound the broker could not resolve (read from the start and filtered by timestamp).
    public var fallbackPartitions: [Int32] = []
    /// Ctrl-C: the summary covers what was applied before the stop.
    public var interrupted = false
    /// Human-readable remarks (retention gaps, fallbacks).
    public var notes: [String] = []
}

/// Why a replay could not run.
public struct ReplayError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case usage, kafkaUnavailable, regionUnavailable, failed }
    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}

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

    static let partitionEOF: Int32 = -191  // RD_KAFKA_RESP_ERR__PARTITION_EOF
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

    // MARK: - Range resolution

    private func resolveRanges(_ consumer: KafkaConsumer, summary: inout ReplaySummary,
                               notice: (String) -> Void) throws(ReplayError) -> [ReplayPartitionRange] {
        let topic = request.topic
        let count: Int
        do {
            count = try consumer.partitionCount(topic: topic, timeoutMs: Self.metadataTimeoutMs)
        } catch {
            throw ReplayError(.kafkaUnavailable, "Kafka (\(topic)): \(error)")
        }
        var partitions = (0..<Int32(count)).map { $0 }
        if let p = request.partition {
            guard p >= 0, Int(p) < count else {
                throw ReplayError(.usage, "--partition \(p): topic \(topic) has partitions 0…\(count - 1)")
            }
            partitions = [p]
        }
        var ranges: [ReplayPartitionRange] = []
        var fromFallback: [Int32] = []
        var toFallback: [Int32] = []
        for p in partitions {
            let marks: (low: Int64, high: Int64)
            do {
                marks = try consumer.queryWatermarks(topic: topic, partition: p, timeoutMs: Self.metadataTimeoutMs)
            } catch {
                throw ReplayError(.kafkaUnavailable, "Kafka (\(topic)[\(p)]): \(error)")
            }
            var range = ReplayPartitionRange(partition: p, start: marks.low, end: marks.high)
            switch request.from {
            case .offset(let n):
                if n < marks.low {
                    summary.notes.append("partition \(p): offsets below \(marks.low) are no longer in the topic (retention); starting at \(marks.low)")
                }
                range.start = max(n, marks.low)
            case .time(let t):
                if let o = offsetForTime(consumer, p, t), o >= 0 {
                    range.start = max(o, marks.low)
                } else if marks.high > marks.low {
                    range.skipBeforeMs = t.microseconds / 1000
                    fromFallback.append(p)
                }
            }
            switch request.to {
            case nil:
                break
            case .offset(let n):
                range.end = min(n, marks.high)
            case .time(let t):
                if let o = offsetForTime(consumer, p, t), o >= 0 {
                    range.end = min(o, marks.high)
                } else if marks.high > marks.low {
                    range.skipFromMs = t.microseconds / 1000
                    toFallback.append(p)
                }
            }
            range.end = max(range.end, range.start)
            ranges.append(range)
        }
        summary.fallbackPartitions = Array(Set(fromFallback + toFallback)).sorted()
        if !fromFallback.isEmpty {
            let text = "fallback: the broker did not resolve --from-time through offsets-for-times for partitions \(fromFallback); reading them from the start and skipping records older than --from-time by their timestamp"
            summary.notes.append(text)
            notice(text)
        }
        if !toFallback.isEmpty {
            let text = "fallback: the broker did not resolve --to-time through offsets-for-times for partitions \(toFallback); reading them to the high watermark and skipping records at or after --to-time by their timestamp"
            summary.notes.append(text)
            notice(text)
        }
        return ranges
    }

    /// The first offset with a timestamp ≥ `t` (nil when the broker cannot say).
    private func offsetForTime(_ consumer: KafkaConsumer, _ p: Int32, _ t: Timestamp) -> Int64? {
        let q = [TopicPartitionOffset(topic: request.topic, partition: p, offset: t.microseconds / 1000)]
        guard let answer = try? consumer.offsetsForTimes(q, timeoutMs: Self.metadataTimeoutMs).first else { return nil }
        return answer.offset
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
        let total = ranges.reduce(0) { $0 + $1.count }
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
                case .error(let e, let fatal):
                    if e.code.rawValue == Self.partitionEOF { break partitionLoop }  // the log ends before `end` (gaps)
                    if fatal { throw ReplayError(.kafkaUnavailable, "Kafka: \(e)") }
                case .record(let r):
                    idleSince = ContinuousClock.now
                    guard r.partition == range.partition, r.offset >= next else { continue }
                    if r.offset >= range.end { break partitionLoop }
                    done += r.offset + 1 - next
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
            done += max(0, range.end - next)  // a gap at the end of the log
        }
        report(force: true)
        return out
    }
}

// MARK: - The database side

/// The replay's database connection and the apply path it drives.
struct ReplaySession {
    let request: ReplayRequest
    private(set) var db: PostgresConnection?
    private(set) var applier: RegionApplier

    init(request: ReplayRequest) throws(ReplayError) {
        self.request = request
        self.applier = RegionApplier(region: request.region, table: request.table, applyToOrigin: request.applyToOrigin,
                                     columns: request.columns)
        do {
            let c = try Self.connect(request)
            let (missing, tables) = try Schema.check(c, table: request.table)
            applier = RegionApplier(region: request.region, table: request.table, applyToOrigin: request.applyToOrigin,
                                    tables: tables, columns: request.columns)
            if !missing.isEmpty {
                c.close()
                throw ReplayError(.failed, "region \(request.region) is not migrated (missing: \(missing.joined(separator: ", "))): run `region-replicator migrate --region \(request.region)`")
            }
            db = c
        } catch let e as ReplayError {
            throw e
        } catch {
            throw ReplayError(.regionUnavailable, "region \(request.region) (\(PostgresConnection.describe(request.conninfo))): \(error)")
        }
    }

    static func connect(_ request: ReplayRequest) throws(PostgresError) -> PostgresConnection {
        let c = try PostgresConnection(conninfo: request.conninfo,
                                       applicationName: "region-replicator replay\(request.dryRun ? " (dry run)" : "")")
        try c.execute("SET jit = off; SET work_mem = '32MB'; SET statement_timeout = '60s'")
        return c
    }

    func close() { db?.close() }

    /// Creates private temporary copies (`pg_temp`) of the rows and tombstones of the range's
    /// sessions and messages, and points the applier at them. The region's tables are only read.
    mutating func prepareDryRun(sessions: [String], messages: [String]) throws(ReplayError) {
        guard let db else { throw ReplayError(.regionUnavailable, "region \(request.region): connection lost") }
        do {
            func qualified(_ name: String) throws(PostgresError) -> String {
                let r = try db.query("""
                    SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = to_regclass($1)
                    """, [name])
                guard let q = r.rows.first?.first ?? nil else {
                    throw PostgresError(code: .init("42P01"), message: "relation \(name) does not exist")
                }
                return q
            }
            let table = try qualified(request.table.quoted)
            let mt = try qualified("replicator_message_tombstones")
            let st = try qualified("replicator_session_tombstones")
            let dl = try qualified("replicator_dead_letters")
            // Private copies in pg_temp; the applier then names them `pg_temp.…` explicitly, so
            // no search_path (not even one with pg_temp after public) can send a write to the
            // region's own tables.
            try db.execute("""
                CREATE TEMP TABLE rr_dry_run_messages (LIKE \(table) INCLUDING ALL);
                CREATE TEMP TABLE replicator_message_tombstones (LIKE \(mt) INCLUDING ALL);
                CREATE TEMP TABLE replicator_session_tombstones (LIKE \(st) INCLUDING ALL);
                CREATE TEMP TABLE replicator_dead_letters (LIKE \(dl) INCLUDING ALL);
                ALTER TABLE pg_temp.replicator_dead_letters ALTER COLUMN id DROP DEFAULT;
                ALTER TABLE pg_temp.replicator_dead_letters ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY;
                """)
            let s = PostgresArray.text(sessions)
            let m = PostgresArray.text(messages)
            try db.query("INSERT INTO pg_temp.rr_dry_run_messages SELECT * FROM \(table) WHERE \(MessageColumns.quote(request.columns.sessionID)) = ANY($1::text[]) OR \(MessageColumns.quote(request.columns.messageID)) = ANY($2::uuid[])", [s, m])
            try db.query("INSERT INTO pg_temp.replicator_message_tombstones SELECT * FROM \(mt) WHERE session_id = ANY($1::text[]) OR message_id = ANY($2::uuid[])", [s, m])
            try db.query("INSERT INTO pg_temp.replicator_session_tombstones SELECT * FROM \(st) WHERE session_id = ANY($1::text[])", [s])
        } catch {
            throw ReplayError(error.isTransient ? .regionUnavailable : .failed,
                              "region \(request.region): preparing the dry run: \(error)")
        }
        do {
            applier = RegionApplier(region: request.region, table: try TableName(validating: "pg_temp.rr_dry_run_messages"),
                                    applyToOrigin: request.applyToOrigin, tables: .inSchema("pg_temp"), columns: request.columns)
        } catch {
            throw ReplayError(.failed, "\(error)")
        }
    }

    /// Applies one batch (no offsets stored), retrying transient failures with capped backoff
    /// until it commits, or returns nil when the job is cancelled while retrying.
    mutating func apply(_ records: [KafkaRecord], notice: (String) -> Void,
                        cancelled: () -> Bool) throws(ReplayError) -> OutcomeCounts? {
        let decoded = records.map { r in
            DecodedRecord(record: RecordRef(topic: r.topic, partition: r.partition, offset: r.offset,
                                            key: r.key, value: r.value, timestampMs: r.timestampMs),
                          event: EventDecoder.decode(r.value))
        }
        var backoff = Backoff()
        while true {
            do {
                let c: PostgresConnection
                if let db, db.isOpen {
                    c = db
                } else {
                    c = try Self.connect(request)
                    db = c
                }
                let result = try applier.apply(decoded, progress: [], consumerGroup: nil, topic: request.topic, on: c)
                if backoff.attempt > 0 { notice("region \(request.region): recovered after \(backoff.attempt) retries") }
                return result.counts
            } catch {
                if request.dryRun && !(db?.isOpen ?? false) {
                    // The temporary copies lived in the lost session.
                    throw ReplayError(.regionUnavailable, "region \(request.region): connection lost during the dry run: \(error)")
                }
                guard error.isTransient else {
                    throw ReplayError(.failed, "region \(request.region): \(error)")
                }
                if let db, !db.isOpen { self.db = nil }
                let delay = backoff.next()
                notice("region \(request.region): \(error); retrying in \(delay.milliseconds) ms (attempt \(backoff.attempt))")
                let until = ContinuousClock.now.advanced(by: delay)
                while ContinuousClock.now < until {
                    if cancelled() { return nil }
                    Thread.sleep(forTimeInterval: 0.05)
                }
            }
        }
    }
}

