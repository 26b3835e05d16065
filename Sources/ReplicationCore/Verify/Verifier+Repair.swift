import Foundation
import PostgresClient

// `verify --repair`: what to write to each region (pure), and writing it, per region in one
// transaction under the apply path's lock.

extension Verifier {
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
        let regions = self.regions
        let fetched = try regionDatabases.eachConnected { i, c throws(PostgresError) -> [FullRow] in
            guard let ids = holders[regions[i]] else { return [] }
            return try c.query(schema.fullRows, parameters: [.text(PostgresArray.text(ids.sorted()))]).namedRows.compactMap(FullRow.init)
        }
        var winnerRows: [String: FullRow] = [:]
        for r in fetched.joined() { winnerRows[r.messageID] = r }
        let winners = winnerRows
        let tables = regionDatabases.bookkeeping
        let marks = targets.map(\.markApplierOrigin)
        return try regionDatabases.eachConnected { i, db throws(PostgresError) -> RepairResult in
            // In a capturing region the repair writes as the applier: capture must not publish
            // them again (they copy what other regions already hold or were told).
            if marks[i] && !dryRun && !plans[i].isEmpty,
               try db.query("SELECT pg_replication_origin_session_is_setup()").rows.first?.first != "t" {
                try ApplierOrigin.markSession(db)
            }
            return try Self.repair(plans[i], winners: plans[i].rows.compactMap { winners[$0] }, schema: schema, tables: tables[i],
                            dryRun: dryRun, on: db)
        }
    }

    /// One region's repair transaction, through the apply path's own statements and lock for
    /// the tombstones (`tables`: the region's bookkeeping tables as resolved at connect).
    private static func repair(_ plan: RepairPlan, winners: [FullRow], schema: VerifySchema, tables: BookkeepingTables,
                               dryRun: Bool, on db: PostgresConnection) throws(PostgresError) -> RepairResult {
        var result = RepairResult(region: plan.region)
        guard !plan.isEmpty else { return result }
        let statements = Statements(table: schema.table, tables: tables, columns: schema.columns)
        var tx = RepairTransaction()
        tx.add(.begin, PostgresStatement("BEGIN"))
        // Exclusively: repair writes rows of any session, tied to no partition.
        tx.add(.lock, PostgresStatement(statements.exclusiveLock))
        // Rows removed by the tombstones: counted before and after, inside the transaction.
        let count = PostgresStatement("SELECT count(*) AS \(RepairTransaction.rowCount) FROM \(schema.table.quoted)")
        tx.add(.countBefore, count)
        if !plan.sessionTombstones.isEmpty {
            var ids = PostgresBinaryArray(.text), at = PostgresBinaryArray(.timestamptz)
            for s in plan.sessionTombstones {
                ids.append(text: s.sessionID)
                at.append(timestamptzMicroseconds: s.deletedAt)
            }
            tx.add(.sessionTombstones, PostgresStatement(statements.sessionTombstones, [ids.parameter, at.parameter]))
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
            tx.add(.messageTombstones, PostgresStatement(statements.messageTombstones,
                                                         [ids.parameter, sessions.parameter, versions.parameter, at.parameter]))
        }
        if !winners.isEmpty {
            var arrays = RepairRowArrays()
            for r in winners { arrays.append(r) }
            tx.add(.rows, PostgresStatement(schema.repairUpsert(tables), arrays.parameters))
        }
        tx.add(.countAfter, count)
        tx.add(.end, PostgresStatement(dryRun ? "ROLLBACK" : "COMMIT"))
        let results = try tx.run(on: db)
        if results[.sessionTombstones] != nil { result.sessionTombstones = plan.sessionTombstones.count }
        if results[.messageTombstones] != nil { result.messageTombstones = plan.messageTombstones.count }
        var inserted = 0
        if let written = results[.rows]?.namedRows {
            result.rowsWritten = written.count
            inserted = written.filter { $0[RepairRowArrays.inserted] == "t" }.count
        }
        let before = results[.countBefore]?.namedRows.first?.integer(RepairTransaction.rowCount) ?? 0
        let after = results[.countAfter]?.namedRows.first?.integer(RepairTransaction.rowCount) ?? 0
        result.rowsDeleted = max(0, before + inserted - after)
        return result
    }
}

/// The statements of one region's repair, each under the name its result is read by.
private struct RepairTransaction {
    enum Step: Hashable { case begin, lock, countBefore, sessionTombstones, messageTombstones, rows, countAfter, end }

    /// The column of the row counts.
    static let rowCount = "row_count"

    private var steps: [Step] = []
    private var statements: [PostgresStatement] = []

    mutating func add(_ step: Step, _ statement: PostgresStatement) {
        steps.append(step)
        statements.append(statement)
    }

    /// Runs every statement in one pipeline (rolled back on an error); the results by step.
    func run(on db: PostgresConnection) throws(PostgresError) -> [Step: PostgresResult] {
        let results = try db.pipelineTransaction(statements)
        return Dictionary(zip(steps, results), uniquingKeysWith: { a, _ in a })
    }
}
