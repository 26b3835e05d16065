import Foundation
import PostgresClient

// The two comparison passes: bisection of the key space by segment checksums, the items of the
// small differing segments, and what they mean (``Classifier``).

extension Verifier {
    // MARK: - Passes

    /// The first pass: compares the whole range and returns every candidate divergence.
    public func compare() throws(VerifyError) -> VerifyPass {
        if !regionDatabases.isConnected { try connect() }
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
            let messages = try fetchMessages(ids: first.messageIDs)
            let sessions = try fetchSessions(ids: first.sessionIDs)
            pass.itemsFetched = first.itemsFetched
            try classify(messages: messages, sessions: sessions, into: &pass)
            pass.divergences = Classifier.persisting(first: first, second: pass)
            let kept = Set(pass.divergences.compactMap(\.messageID))
            pass.truths = pass.truths.filter { kept.contains($0.key) }
            pass.states = pass.states.filter { kept.contains($0.key) }
            try end()
            return pass
        } catch {
            try? end()
            throw error
        }
    }

    private func begin() throws(VerifyError) {
        _ = try regionDatabases.eachConnected { _, c throws(PostgresError) in
            try c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        }
    }

    private func end() throws(VerifyError) {
        _ = try regionDatabases.eachConnected { _, c throws(PostgresError) in try c.execute("COMMIT") }
    }

    // MARK: - Bisection

    /// The two key spaces: message ids (rows and message tombstones), and hashed session ids
    /// (session tombstones).
    enum Space { case messages, sessions }

    /// What the items statements returned: per region, one result per statement.
    typealias Fetched = [[PostgresResult]]

    private var sessionFilter: PostgresParameter { options.sessionID.map { .text($0) } ?? .null }

    private func digestStatement(_ space: Space, _ range: KeyRange, width: Int64, _ tables: BookkeepingTables) -> PostgresStatement {
        switch space {
        case .messages:
            let b = range.uuidBounds
            return PostgresStatement(options.schema.uuidSegmentDigests(tables),
                                     [.text(b.lo), b.hi.map { .text($0) } ?? .null, .text(String(range.lo)), .text(String(width)), sessionFilter])
        case .sessions:
            return PostgresStatement(VerifySchema.sessionSegmentDigests(tables),
                                     [.text(String(range.lo)), .text(String(range.hi)), .text(String(range.lo)), .text(String(width)), sessionFilter])
        }
    }

    private func itemsStatement(_ space: Space, _ range: KeyRange, _ tables: BookkeepingTables) -> PostgresStatement {
        switch space {
        case .messages:
            let b = range.uuidBounds
            return PostgresStatement(options.schema.uuidItems(tables), [.text(b.lo), b.hi.map { .text($0) } ?? .null, sessionFilter, .null])
        case .sessions:
            return PostgresStatement(VerifySchema.sessionItems(tables), [.text(String(range.lo)), .text(String(range.hi)), sessionFilter, .null])
        }
    }

    /// Compares `options.range` of `space` level by level and fetches the items of the small
    /// differing segments: the candidates of that space, per region.
    private func bisect(space: Space, pass: inout VerifyPass) throws(VerifyError) -> Fetched {
        var pending: [KeyRange] = [options.range]
        var toFetch: [KeyRange] = []
        var level = 0
        while !pending.isEmpty {
            let fanout = level == 0 ? options.firstFanout : options.fanout
            let plan = pending.map { (range: $0, width: $0.segmentWidth(fanout: fanout)) }
            let results = try regionDatabases.pipeline { tables in plan.map { self.digestStatement(space, $0.range, width: $0.width, tables) } }
            var next: [KeyRange] = []
            var scanned: Int64 = 0
            for (k, (range, width)) in plan.enumerated() {
                // Per region: segment → digest. A database's reply, read defensively: a segment
                // number outside the range's segments, or a negative count, is no digest of this
                // range (and differs from the other regions' digests, so the range is looked at
                // more closely).
                let segments = range.width / width + (range.width % width == 0 ? 0 : 1)
                let digests: [[Int64: SegmentDigest]] = results.map { perRegion in
                    var d: [Int64: SegmentDigest] = [:]
                    for row in perRegion[k].namedRows.compactMap(SegmentDigestRow.init)
                    where row.segment >= 0 && row.segment < segments && row.digest.count >= 0 {
                        d[row.segment] = row.digest
                    }
                    return d
                }
                for (i, d) in digests.enumerated() {
                    let n = d.values.reduce(Int64(0)) { $0.saturatingAdding($1.count) }
                    scanned = scanned.saturatingAdding(n)
                    if level == 0 { pass.items[regions[i]] = (pass.items[regions[i]] ?? 0).saturatingAdding(n) }
                }
                pass.segmentsCompared += Set(digests.flatMap(\.keys)).count
                let p = Bisection.plan(digests, fetchAtMost: options.fetchAtMost, splittable: { _ in width > 1 })
                pass.segmentsDiffering += p.fetch.count
                toFetch += p.fetch.map { range.segment($0, width: width) }
                next += p.split.map { range.segment($0, width: width) }
            }
            if let pace = options.pace {
                // Never sleep inside a snapshot: it would hold back vacuum in every region.
                try end()
                pace(scanned)
                try begin()
            }
            pending = next
            level += 1
        }
        guard !toFetch.isEmpty else { return Array(repeating: [], count: targets.count) }
        let fetched = try regionDatabases.pipeline { tables in toFetch.map { self.itemsStatement(space, $0, tables) } }
        pass.itemsFetched += fetched.reduce(0) { $0 + $1.reduce(0) { $0 + $1.rows.count } }
        return fetched
    }

    private func fetchMessages(ids: [String]) throws(VerifyError) -> Fetched {
        guard !ids.isEmpty else { return Array(repeating: [], count: targets.count) }
        let schema = options.schema
        return try regionDatabases.pipeline { [PostgresStatement(schema.uuidItems($0), [.null, .null, .null, .text(PostgresArray.text(ids))])] }
    }

    private func fetchSessions(ids: [String]) throws(VerifyError) -> Fetched {
        guard !ids.isEmpty else { return Array(repeating: [], count: targets.count) }
        return try regionDatabases.pipeline { [PostgresStatement(VerifySchema.sessionItems($0), [.null, .null, .null, .text(PostgresArray.text(ids))])] }
    }

    // MARK: - Classification

    /// Turns fetched items into divergences. Session tombstones that decide whether a row is
    /// covered are read from every region for the sessions of the candidate rows.
    private func classify(messages: Fetched, sessions: Fetched, into pass: inout VerifyPass) throws(VerifyError) {
        // Message id → region → what it holds.
        var byID: [String: [String: MessageState]] = [:]
        var rowSessions: Set<String> = []
        for (i, results) in messages.enumerated() {
            let region = regions[i]
            for item in results.flatMap(\.namedRows).compactMap(UUIDSpaceItem.init) {
                switch item {
                case .row(let id, let row):
                    byID[id, default: [:]][region, default: MessageState()].row = row
                    rowSessions.insert(row.sessionID)
                case .tombstone(let id, let tombstone):
                    byID[id, default: [:]][region, default: MessageState()].tombstone = tombstone
                }
            }
        }
        // Session → region → deleted_at.
        var sessionStates: [String: [String: Int64]] = [:]
        for (i, results) in sessions.enumerated() {
            for item in results.flatMap(\.namedRows).compactMap(SessionTombstoneItem.init) {
                sessionStates[item.sessionID, default: [:]][regions[i]] = item.deletedAt
            }
        }
        // The highest session tombstone of each candidate row's session, from every region.
        var covering: [String: Int64] = [:]
        let wanted = rowSessions.sorted()
        if !wanted.isEmpty {
            let ids = PostgresParameter.text(PostgresArray.text(wanted))
            for perRegion in try regionDatabases.pipeline({ [PostgresStatement(VerifySchema.sessionItems($0), [.null, .null, .null, ids])] }) {
                for item in (perRegion.first?.namedRows ?? []).compactMap(SessionTombstoneItem.init) {
                    covering[item.sessionID] = max(covering[item.sessionID] ?? item.deletedAt, item.deletedAt)
                }
            }
        }
        for (s, per) in sessionStates { if let m = per.values.max() { covering[s] = max(covering[s] ?? m, m) } }

        for (id, states) in byID.sorted(by: { $0.key < $1.key }) {
            let (truth, found) = Classifier.classify(messageID: id, states, regions: regions, sessionTombstone: { covering[$0] })
            if !found.isEmpty {
                pass.divergences += found
                pass.truths[id] = truth
                pass.states[id] = states
            }
        }
        for (s, per) in sessionStates.sorted(by: { $0.key < $1.key }) {
            pass.divergences += Classifier.classifySession(s, per, regions: regions)
        }
        pass.divergences.sort()
    }
}
