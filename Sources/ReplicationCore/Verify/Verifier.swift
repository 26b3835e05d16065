import Foundation
import PostgresClient
import Synchronization

/// Compares the regions' messages and tombstones with checksums computed inside each region's
/// Postgres over key-range segments, bisecting only the segments that differ, and fetching
/// only the items of small differing segments.
///
/// Each pass reads every region in one `REPEATABLE READ READ ONLY` transaction (a consistent
/// snapshot; no lock that blocks the applier or the application). Regions are queried in
/// parallel, one thread each.
///
/// - Important: Blocking (libpq). Run on a dedicated thread.
public final class Verifier: @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time; the per-region threads it starts each
    // touch only their own connection.
    public let targets: [VerifyTarget]
    public let options: VerifyOptions
    private var connections: [PostgresConnection?]
    /// Each region's bookkeeping tables, schema-qualified as its `search_path` resolves them.
    private var bookkeeping: [BookkeepingTables]
    private let applicationName: String

    public init(targets: [VerifyTarget], options: VerifyOptions, applicationName: String = "region-replicator verify") {
        self.targets = targets
        self.options = options
        self.connections = Array(repeating: nil, count: targets.count)
        self.bookkeeping = Array(repeating: .unqualified, count: targets.count)
        self.applicationName = applicationName
    }

    deinit { close() }

    public func close() {
        for c in connections { c?.close() }
        connections = Array(repeating: nil, count: targets.count)
    }

    private var regions: [String] { targets.map(\.region) }

    // MARK: - Connections and parallel queries

    /// Connects to every region (or re-connects those lost) and checks the tables exist.
    public func connect() throws(VerifyError) {
        let conns = try eachRegion { i throws(PostgresError) -> PostgresConnection in
            if let c = self.connections[i], c.isOpen { return c }
            let c = try PostgresConnection(conninfo: self.targets[i].conninfo, applicationName: self.applicationName,
                                           connectTimeoutSeconds: 5, queryTimeout: .seconds(600))
            try c.execute("SET jit = off; SET work_mem = '64MB'; SET TimeZone = 'UTC'")
            return c
        }
        connections = conns
        for (i, c) in conns.enumerated() {
            let missing: [String]
            do { (missing, bookkeeping[i]) = try Schema.check(c, table: options.schema.table) } catch {
                throw VerifyError(.regionUnavailable, "region \(targets[i].region): \(error)")
            }
            if !missing.isEmpty {
                throw VerifyError(.failed, "region \(targets[i].region) is not migrated (missing: \(missing.joined(separator: ", "))): run `region-replicator migrate --region \(targets[i].region)`")
            }
        }
    }

    /// Runs `body` for every region at once, one thread each; the first error names its region.
    private func eachRegion<T: Sendable>(_ body: @escaping @Sendable (Int) throws(PostgresError) -> T) throws(VerifyError) -> [T] {
        let n = targets.count
        let results = LockedBox<[Int: Result<T, PostgresError>]>([:])
        let group = DispatchGroup()
        for i in 0..<n {
            group.enter()
            let t = Thread {
                let r: Result<T, PostgresError>
                do throws(PostgresError) { r = .success(try body(i)) } catch { r = .failure(error) }
                results.withLock { $0[i] = r }
                group.leave()
            }
            t.name = "verify-\(targets[i].region)"
            t.start()
        }
        group.wait()
        var out: [T] = []
        for i in 0..<n {
            switch results.withLock({ $0[i] })! {
            case .success(let v): out.append(v)
            case .failure(let e):
                let what = "region \(targets[i].region) (\(PostgresConnection.describe(targets[i].conninfo))): \(e)"
                throw VerifyError(e.isTransient ? .regionUnavailable : .failed, what)
            }
        }
        return out
    }

    private func connection(_ i: Int) throws(PostgresError) -> PostgresConnection {
        guard let c = connections[i], c.isOpen else {
            throw PostgresError(code: .connectionFailure, message: "connection lost")
        }
        return c
    }

    // MARK: - The whole verification

    /// What a verification found, after the second pass.
    public struct Outcome: Sendable {
        /// The divergences that persisted (and the winners, for a repair).
        public var pass: VerifyPass
        /// Divergences the first pass found (in flight or not).
        public var candidates: Int
        /// Regions that had not applied, within the settle timeout, everything the topic held
        /// when the first pass started: why (their divergences may still be in flight).
        public var lagging: [String: String] = [:]
        public var startedAt: Timestamp
        public var seconds: Double
    }

    /// First pass, then — only when it found candidates — a wait until every region's stored
    /// offsets reach the topic's high watermarks as read just before the first pass (so every
    /// event in flight then is applied everywhere), then the second pass over the candidates.
    ///
    /// - Parameters:
    ///   - watermarks: the topic's high watermarks now (called once, before the first pass), or
    ///     why they cannot be read.
    ///   - cancelled: polled while waiting.
    public func run(watermarks: () -> Result<[Int32: Int64], VerifyError>,
                    cancelled: () -> Bool = { false }) throws(VerifyError) -> Outcome {
        let started = ContinuousClock.now
        let startedAt = Timestamp.now
        try connect()
        let marks = watermarks()
        let first = try compare()
        func finish(_ pass: VerifyPass, lagging: [String: String]) -> Outcome {
            Outcome(pass: pass, candidates: first.divergences.count, lagging: lagging, startedAt: startedAt,
                    seconds: (ContinuousClock.now - started).seconds)
        }
        guard !first.divergences.isEmpty else { return finish(first, lagging: [:]) }
        let high: [Int32: Int64]
        switch marks {
        case .success(let h): high = h
        case .failure(let e):
            throw VerifyError(e.kind, "the first pass found \(first.divergences.count) candidate divergences, which cannot be confirmed: \(e.description)")
        }
        let lagging = try waitApplied(high, cancelled: cancelled)
        return finish(try recheck(first), lagging: lagging)
    }

    /// Waits (at most `options.settleTimeout`) until every region's stored offsets reach `high`;
    /// returns the regions that did not, with their remaining lag.
    private func waitApplied(_ high: [Int32: Int64], cancelled: () -> Bool) throws(VerifyError) -> [String: String] {
        let deadline = ContinuousClock.now.advanced(by: options.settleTimeout)
        let topic = options.topic
        while true {
            let stored = try eachRegion { i throws(PostgresError) in
                try RegionApplier.storedOffsets(group: self.targets[i].consumerGroup, topic: topic, on: self.connection(i))
            }
            var lagging: [String: String] = [:]
            for (i, s) in stored.enumerated() {
                // Broker watermarks and offsets stored in the databases: saturating, never trapping.
                let behind = high.reduce(Int64(0)) { $0.saturatingAdding(max(0, $1.value.saturatingSubtracting(s[$1.key] ?? 0))) }
                if behind > 0 { lagging[regions[i]] = "\(behind) events behind the topic as it was when verify started" }
            }
            if lagging.isEmpty || ContinuousClock.now >= deadline || cancelled() { return lagging }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }

    // MARK: - Passes

    /// The first pass: compares the whole range and returns every candidate divergence.
    public func compare() throws(VerifyError) -> VerifyPass {
        if connections.contains(where: { $0 == nil }) { try connect() }
        try begin()
        do throws(VerifyError) {
            var pass = VerifyPass()
            let messages = try bisect(space: .messages, pass: &pass)
            let sessions = try bisect(space: .sessions, pass: &pass)
            try classify(messages: messages, sessions: sessions, into: &pass)
            try end()
            return pass
        } catch {
            try? end()
            throw error
        }
    }

    /// The second pass: re-reads only what `first` found and keeps what persists.
    public func recheck(_ first: VerifyPass) throws(VerifyError) -> VerifyPass {
        try connect()
        try begin()
        do throws(VerifyError) {
            var pass = VerifyPass()
            pass.items = first.items
            pass.segmentsCompared = first.segmentsCompared
            pass.segmentsDiffering = first.segmentsDiffering
            let ids = first.messageIDs
            let sessionIDs = first.sessionIDs
            let messages = try fetchMessages(ids: ids)
            let sessions = try fetchSessions(ids: sessionIDs)
            pass.itemsFetched = first.itemsFetched
            try classify(messages: messages, sessions: sessions, into: &pass)
            pass.divergences = Classifier.persisting(first: first.divergences, second: pass.divergences)
            let kept = Set(pass.divergences.compactMap(\.messageID))
            pass.truths = pass.truths.filter { kept.contains($0.key) }
            try end()
            return pass
        } catch {
            try? end()
            throw error
        }
    }

    private func begin() throws(VerifyError) {
        _ = try eachRegion { i throws(PostgresError) in
            try self.connection(i).execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        }
    }

    private func end() throws(VerifyError) {
        _ = try eachRegion { i throws(PostgresError) in try self.connection(i).execute("COMMIT") }
    }

    // MARK: - Bisection

    enum Space { case messages, sessions }

    /// Per region: message id → state (for the messages space), or session → deleted_at µs.
    struct Fetched: Sendable {
        var messages: [[String: MessageState]]
        var sessions: [[String: Int64]]
    }

    private func digestStatement(_ space: Space, _ range: KeyRange, width: Int64) -> PostgresStatement {
        let session: PostgresParameter = options.sessionID.map { .text($0) } ?? .null
        switch space {
        case .messages:
            let b = range.uuidBounds
            return PostgresStatement(options.schema.uuidSegmentDigests,
                                     [.text(b.lo), b.hi.map { .text($0) } ?? .null, .text(String(range.lo)), .text(String(width)), session])
        case .sessions:
            return PostgresStatement(VerifySchema.sessionSegmentDigests,
                                     [.text(String(range.lo)), .text(String(range.hi)), .text(String(range.lo)), .text(String(width)), session])
        }
    }

    private func itemsStatement(_ space: Space, _ range: KeyRange) -> PostgresStatement {
        let session: PostgresParameter = options.sessionID.map { .text($0) } ?? .null
        switch space {
        case .messages:
            let b = range.uuidBounds
            return PostgresStatement(options.schema.uuidItems, [.text(b.lo), b.hi.map { .text($0) } ?? .null, session, .null])
        case .sessions:
            return PostgresStatement(VerifySchema.sessionItems, [.text(String(range.lo)), .text(String(range.hi)), session, .null])
        }
    }

    /// Compares `options.range` of `space` level by level and fetches the items of the small
    /// differing segments: the candidates of that space, per region.
    private func bisect(space: Space, pass: inout VerifyPass) throws(VerifyError) -> [[PostgresResult]] {
        var pending: [KeyRange] = [options.range]
        var toFetch: [KeyRange] = []
        var level = 0
        while !pending.isEmpty {
            let fanout = level == 0 ? options.firstFanout : options.fanout
            let plan = pending.map { ($0, $0.segmentWidth(fanout: fanout)) }
            let statements = plan.map { digestStatement(space, $0.0, width: $0.1) }
            let results = try eachRegion { i throws(PostgresError) in try self.connection(i).pipeline(statements) }
            var next: [KeyRange] = []
            var scanned: Int64 = 0
            for (k, (range, width)) in plan.enumerated() {
                // A database's reply, read defensively: a segment number outside the range's
                // segments, or a negative count, is no digest of this range (and differs from
                // the other regions' digests, so the range is looked at more closely).
                let segments = range.width / width + (range.width % width == 0 ? 0 : 1)
                let digests: [[Int64: SegmentDigest]] = results.map { perRegion in
                    var d: [Int64: SegmentDigest] = [:]
                    for row in perRegion[k].rows {
                        guard let s = row[0].flatMap({ Int64($0) }), s >= 0, s < segments,
                              let n = row[1].flatMap({ Int64($0) }), n >= 0 else { continue }
                        d[s] = SegmentDigest(count: n, xor: row[2].flatMap { Int64($0) } ?? 0)
                    }
                    return d
                }
                for (i, d) in digests.enumerated() {
                    let n = d.values.reduce(Int64(0)) { $0.saturatingAdding($1.count) }
                    scanned = scanned.saturatingAdding(n)
                    if level == 0 { pass.items[regions[i], default: 0] = (pass.items[regions[i]] ?? 0).saturatingAdding(n) }
                }
                pass.segmentsCompared += Set(digests.flatMap(\.keys)).count
                let p = Bisection.plan(digests, fetchAtMost: options.fetchAtMost, splittable: { _ in width > 1 })
                pass.segmentsDiffering += p.fetch.count
                toFetch += p.fetch.map { range.segment($0, width: width) }
                next += p.split.map { range.segment($0, width: width) }
            }
            options.pace?(scanned)
            pending = next
            level += 1
        }
        guard !toFetch.isEmpty else { return Array(repeating: [], count: targets.count) }
        let statements = toFetch.map { itemsStatement(space, $0) }
        let fetched = try eachRegion { i throws(PostgresError) in try self.connection(i).pipeline(statements) }
        pass.itemsFetched += fetched.reduce(0) { $0 + $1.reduce(0) { $0 + $1.rows.count } }
        return fetched
    }

    private func fetchMessages(ids: [String]) throws(VerifyError) -> [[PostgresResult]] {
        guard !ids.isEmpty else { return Array(repeating: [], count: targets.count) }
        let st = PostgresStatement(options.schema.uuidItems, [.null, .null, .null, .text(PostgresArray.text(ids))])
        return try eachRegion { i throws(PostgresError) in try self.connection(i).pipeline([st]) }
    }

    private func fetchSessions(ids: [String]) throws(VerifyError) -> [[PostgresResult]] {
        guard !ids.isEmpty else { return Array(repeating: [], count: targets.count) }
        let st = PostgresStatement(VerifySchema.sessionItems, [.null, .null, .null, .text(PostgresArray.text(ids))])
        return try eachRegion { i throws(PostgresError) in try self.connection(i).pipeline([st]) }
    }

    // MARK: - Classification

    /// Turns fetched items into divergences. Session tombstones that decide whether a row is
    /// covered are read from every region for the sessions of the candidate rows.
    private func classify(messages: [[PostgresResult]], sessions: [[PostgresResult]], into pass: inout VerifyPass) throws(VerifyError) {
        var byID: [String: [String: MessageState]] = [:]
        var rowSessions: Set<String> = []
        for (i, results) in messages.enumerated() {
            let region = regions[i]
            for r in results {
                for row in r.rows {
                    guard let kind = row[0], let id = row[1], let session = row[2], let version = row[3].flatMap({ Int64($0) }) else { continue }
                    var s = byID[id]?[region] ?? MessageState()
                    if kind == "m" {
                        s.row = RowState(version: version, contentHash: row[5] ?? "", fingerprint: row[4].flatMap { Int64($0) } ?? 0,
                                         sessionID: session, createdAt: row[6].flatMap { Int64($0) } ?? 0,
                                         replicatedAt: row[7].flatMap { Int64($0) } ?? 0)
                        rowSessions.insert(session)
                    } else {
                        s.tombstone = TombstoneState(version: version, sessionID: session, deletedAt: row[6].flatMap { Int64($0) } ?? 0)
                    }
                    byID[id, default: [:]][region] = s
                }
            }
        }
        var sessionStates: [String: [String: Int64]] = [:]
        for (i, results) in sessions.enumerated() {
            for r in results {
                for row in r.rows {
                    guard let s = row[0], let at = row[1].flatMap({ Int64($0) }) else { continue }
                    sessionStates[s, default: [:]][regions[i]] = at
                }
            }
        }
        // The highest session tombstone of each candidate row's session, from every region.
        var covering: [String: Int64] = [:]
        let wanted = rowSessions.sorted()
        if !wanted.isEmpty {
            let st = PostgresStatement(VerifySchema.sessionItems, [.null, .null, .null, .text(PostgresArray.text(wanted))])
            let results = try eachRegion { i throws(PostgresError) in try self.connection(i).pipeline([st]) }
            for r in results {
                for row in r.first?.rows ?? [] {
                    guard let s = row[0], let at = row[1].flatMap({ Int64($0) }) else { continue }
                    covering[s] = max(covering[s] ?? at, at)
                }
            }
        }
        for (s, per) in sessionStates { if let m = per.values.max() { covering[s] = max(covering[s] ?? m, m) } }

        for (id, states) in byID.sorted(by: { $0.key < $1.key }) {
            let (truth, found) = Classifier.classify(messageID: id, states, regions: regions, sessionTombstone: { covering[$0] })
            if !found.isEmpty {
                pass.divergences += found
                pass.truths[id] = truth
            }
        }
        for (s, per) in sessionStates.sorted(by: { $0.key < $1.key }) {
            pass.divergences += Classifier.classifySession(s, per, regions: regions)
        }
        pass.divergences.sort()
    }

    // MARK: - Repair

    /// What a repair writes to one region.
    public struct RepairPlan: Sendable {
        public var region: String
        public var sessionTombstones: [(sessionID: String, deletedAt: Int64)] = []
        public var messageTombstones: [(messageID: String, state: TombstoneState)] = []
        /// Message ids whose winning row is written.
        public var rows: [String] = []

        public var isEmpty: Bool { sessionTombstones.isEmpty && messageTombstones.isEmpty && rows.isEmpty }
    }

    /// What a repair of `pass` writes, per region (pure).
    public static func repairPlans(_ pass: VerifyPass, regions: [String]) -> [RepairPlan] {
        regions.map { region in
            var plan = RepairPlan(region: region)
            var sessions: [String: Int64] = [:]
            var tombs: [String: TombstoneState] = [:]
            var rows: Set<String> = []
            for d in pass.divergences where d.region == region {
                switch d.kind {
                case .sessionTombstoneMissing:
                    if let w = d.want { sessions[d.sessionID] = max(sessions[d.sessionID] ?? w, w) }
                case .missing, .stale:
                    if let id = d.messageID { rows.insert(id) }
                case .tombstoneMissing, .resurrected:
                    guard let id = d.messageID, let t = pass.truths[id] else { continue }
                    if let tomb = t.tombstone { tombs[id] = tomb }
                    if let cover = t.sessionCover { sessions[t.sessionID] = max(sessions[t.sessionID] ?? cover, cover) }
                case .onlyHere:
                    break
                }
            }
            plan.sessionTombstones = sessions.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            plan.messageTombstones = tombs.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
            plan.rows = rows.sorted()
            return plan
        }
    }

    /// What one region's repair did.
    public struct RepairResult: Sendable {
        public var region: String
        public var sessionTombstones = 0
        public var messageTombstones = 0
        public var rowsWritten = 0
        public var rowsDeleted = 0
    }

    /// Writes every plan: per region one transaction under the apply path's table lock, taken
    /// exclusively, so it serialises with every applier's batches. With `dryRun`, the transactions roll back.
    public func repair(_ pass: VerifyPass, dryRun: Bool) throws(VerifyError) -> [RepairResult] {
        try connect()
        let plans = Self.repairPlans(pass, regions: regions)
        // The winning rows, read from a region that holds each.
        var wantedFrom: [String: [String]] = [:]
        for id in Set(plans.flatMap(\.rows)) {
            guard let holder = pass.truths[id]?.rowHolder else { continue }
            wantedFrom[holder, default: []].append(id)
        }
        let schema = options.schema
        let holders = wantedFrom
        let fetched = try eachRegion { i throws(PostgresError) -> [[String?]] in
            guard let ids = holders[self.regions[i]] else { return [] }
            return try self.connection(i).query(schema.fullRows, parameters: [.text(PostgresArray.text(ids.sorted()))]).rows
        }
        var winnerRows: [String: [String?]] = [:]
        for perRegion in fetched { for r in perRegion { if let id = r[0] { winnerRows[id] = r } } }
        let rows = winnerRows
        let tables = bookkeeping
        return try eachRegion { i throws(PostgresError) -> RepairResult in
            // The apply path's own statements (and lock) for the tombstones.
            let statements = Statements(table: schema.table, tables: tables[i], columns: schema.columns)
            let plan = plans[i]
            var result = RepairResult(region: plan.region)
            guard !plan.isEmpty else { return result }
            let db = try self.connection(i)
            // Exclusively: repair writes rows of any session, tied to no partition.
            var steps = [PostgresStatement("BEGIN"), PostgresStatement(statements.exclusiveLock)]
            var kinds: [String] = []
            if !plan.sessionTombstones.isEmpty {
                var ids = PostgresBinaryArray(.text), at = PostgresBinaryArray(.timestamptz)
                for s in plan.sessionTombstones {
                    ids.append(text: s.sessionID)
                    at.append(timestamptzMicroseconds: s.deletedAt)
                }
                steps.append(PostgresStatement(statements.sessionTombstones, [ids.parameter, at.parameter]))
                kinds.append("s")
            }
            if !plan.messageTombstones.isEmpty {
                var ids = PostgresBinaryArray(.uuid), sessions = PostgresBinaryArray(.text)
                var versions = PostgresBinaryArray(.int8), at = PostgresBinaryArray(.timestamptz)
                for (id, t) in plan.messageTombstones {
                    guard let u = UUID(uuidString: id) else { continue }
                    ids.append(uuid: u)
                    sessions.append(text: t.sessionID)
                    versions.append(int8: t.version)
                    at.append(timestamptzMicroseconds: t.deletedAt)
                }
                steps.append(PostgresStatement(statements.messageTombstones,
                                               [ids.parameter, sessions.parameter, versions.parameter, at.parameter]))
                kinds.append("t")
            }
            let winners = plan.rows.compactMap { rows[$0] }
            if !winners.isEmpty {
                var cols = (0..<8).map { k in
                    PostgresBinaryArray([PostgresBinaryArray.ElementType.uuid, .text, .text, .text, .text, .timestamptz, .int8, .text][k])
                }
                for r in winners {
                    guard let id = r[0].flatMap({ UUID(uuidString: $0) }), let created = r[5].flatMap({ Int64($0) }),
                          let version = r[6].flatMap({ Int64($0) }) else { continue }
                    cols[0].append(uuid: id)
                    for k in 1...4 { cols[k].append(text: r[k] ?? "") }
                    cols[5].append(timestamptzMicroseconds: created)
                    cols[6].append(int8: version)
                    if r.count > 7, let a = r[7] { cols[7].append(text: a) } else { cols[7].appendNull() }
                }
                steps.append(PostgresStatement(schema.repairUpsert, cols.map(\.parameter)))
                kinds.append("m")
            }
            // Rows removed by the tombstones: counted before and after, inside the transaction.
            let count = PostgresStatement("SELECT count(*) FROM \(schema.table.quoted)")
            steps.insert(count, at: 2)
            steps.append(count)
            steps.append(PostgresStatement(dryRun ? "ROLLBACK" : "COMMIT"))
            let results = try db.pipelineTransaction(steps)
            let before = Int(results[2].rows.first?.first.flatMap { $0 } ?? "0") ?? 0
            var inserted = 0
            for (k, kind) in kinds.enumerated() {
                let r = results[3 + k]
                switch kind {
                case "s": result.sessionTombstones = plan.sessionTombstones.count
                case "t": result.messageTombstones = plan.messageTombstones.count
                default:
                    result.rowsWritten = r.rows.count
                    inserted = r.rows.filter { $0.count > 1 && $0[1] == "t" }.count
                }
            }
            let after = Int(results[3 + kinds.count].rows.first?.first.flatMap { $0 } ?? "0") ?? 0
            result.rowsDeleted = max(0, before + inserted - after)
            return result
        }
    }
}
