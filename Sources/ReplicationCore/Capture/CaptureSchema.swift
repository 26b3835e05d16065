public import PostgresClient

/// What capture needs in a region's database, created by `migrate` and checked by `run`:
/// `wal_level = logical`, the messages table with `REPLICA IDENTITY FULL`, a publication of it,
/// a `pgoutput` slot, the applier's replication origins, and `replicator_erase_session`.
public enum CaptureSchema {
    /// A reason capture cannot stream a region until a person acts (retried slowly).
    public struct Problem: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The slot's and the table's state when streaming may start.
    public struct Ready: Sendable {
        public var tableOID: UInt32
        public var schema: String
        public var name: String
        /// The slot's confirmed flush position: where the stream resumes.
        public var confirmed: LSN
        /// pgoutput sends logical messages (the session erasures) from Postgres 14 on.
        public var sendsMessages: Bool
    }

    /// Creates what capture needs that is missing. Runs outside any transaction (a slot cannot
    /// be created in a transaction that has written). The messages table is altered
    /// (`REPLICA IDENTITY FULL`) only when `migrate` created it or `alterExistingTable`.
    public static func migrate(_ db: PostgresConnection, table: TableName, columns: MessageColumns, slot: String, publication: String,
                               origins: Int, alterExistingTable: Bool) throws(PostgresError) -> Schema.MigrateReport {
        var report = Schema.MigrateReport()
        let level = try db.query("SHOW wal_level").rows.first?.first ?? nil
        guard level == "logical" else {
            report.problems.append(Schema.TableProblem(
                message: "capture needs wal_level = logical (the server runs with \(level ?? "?"))", fix: nil,
                dba: "ALTER SYSTEM SET wal_level = logical; -- then restart the server"))
            return report
        }
        let identity = try db.query("SELECT relreplident FROM pg_class WHERE oid = to_regclass($1)", [table.quoted]).rows.first?.first ?? nil
        if identity != "f" {
            let fix = "ALTER TABLE \(table.quoted) REPLICA IDENTITY FULL"
            let ours = try db.query("SELECT created_by_migrate FROM replicator_schema WHERE table_name = $1",
                                    [table.description]).rows.first?.first == "t"
            if ours || alterExistingTable {
                try db.execute(fix)
                report.done.append("table \(table): REPLICA IDENTITY FULL (capture needs the old row of every UPDATE and DELETE)")
            } else {
                report.problems.append(Schema.TableProblem(
                    message: "table \(table) does not log the old row of UPDATE and DELETE (REPLICA IDENTITY is not FULL), which capture needs",
                    fix: fix))
            }
        }
        let pub = try db.query("SELECT puballtables FROM pg_publication WHERE pubname = $1", [publication]).rows.first
        if pub == nil {
            try db.execute("CREATE PUBLICATION \"\(publication)\" FOR TABLE \(table.quoted)")
            report.done.append("created publication \(publication) of table \(table)")
        } else if pub?.first != "t", try !publishes(db, publication: publication, table: table) {
            try db.execute("ALTER PUBLICATION \"\(publication)\" ADD TABLE \(table.quoted)")
            report.done.append("added table \(table) to publication \(publication)")
        }
        if let existing = try db.query("""
            SELECT s.slot_type, s.plugin, d.datname = current_database() FROM pg_replication_slots s
            LEFT JOIN pg_database d ON d.oid = s.datoid WHERE s.slot_name = $1
            """, [slot]).rows.first {
            if existing != ["logical", "pgoutput", "t"] {
                report.problems.append(Schema.TableProblem(
                    message: "replication slot \(slot) exists but is not a pgoutput slot of this database (\(existing.map { $0 ?? "NULL" }.joined(separator: ", "))); drop it or choose another capture.slot_prefix",
                    fix: nil))
            }
        } else {
            let at = try db.query("SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')", [slot]).rows.first?.first ?? nil
            report.done.append("created replication slot \(slot) at \(at ?? "?"): capture publishes the region's writes from here on")
        }
        let created = try ApplierOrigin.ensure(count: origins, on: db)
        if !created.isEmpty { report.done.append("created replication origins \(created.joined(separator: ", ")) (they mark the applier's writes)") }
        if let erase = try migrateEraseFunction(db, table: table, columns: columns) { report.done.append(erase) }
        return report
    }

    static func publishes(_ db: PostgresConnection, publication: String, table: TableName) throws(PostgresError) -> Bool {
        try db.query("""
            SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
                           WHERE p.pubname = $1 AND r.prrelid = to_regclass($2))
            """, [publication, table.quoted]).rows.first?.first == "t"
    }

    /// What `run` checks before it streams: the table, its replica identity, the publication
    /// and the slot.
    /// - Throws: ``Problem`` for what a person must fix; ``PostgresError`` for the rest.
    public static func inspect(_ db: PostgresConnection, table: TableName, slot: String,
                               publication: String) throws -> Ready {
        guard let t = try db.query("""
            SELECT c.oid::text, n.nspname, c.relname, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.oid = to_regclass($1)
            """, [table.quoted]).rows.first, let oid = UInt32(t[0] ?? ""), let schema = t[1], let name = t[2] else {
            throw Problem(description: "table \(table) does not exist: run `region-replicator migrate`")
        }
        guard t[3] == "f" else {
            throw Problem(description: "table \(table) does not log the old row of UPDATE and DELETE (REPLICA IDENTITY is not FULL); fix: ALTER TABLE \(table.quoted) REPLICA IDENTITY FULL; (or `region-replicator migrate --alter-existing-table`)")
        }
        guard let pub = try db.query("SELECT puballtables FROM pg_publication WHERE pubname = $1", [publication]).rows.first else {
            throw Problem(description: "publication \(publication) does not exist: run `region-replicator migrate`")
        }
        if pub.first != "t", try !publishes(db, publication: publication, table: table) {
            throw Problem(description: "publication \(publication) does not include table \(table): run `region-replicator migrate`")
        }
        guard let s = try db.query("""
            SELECT s.plugin, d.datname = current_database(), s.confirmed_flush_lsn::text FROM pg_replication_slots s
            LEFT JOIN pg_database d ON d.oid = s.datoid WHERE s.slot_name = $1
            """, [slot]).rows.first else {
            throw Problem(description: "replication slot \(slot) does not exist: run `region-replicator migrate`")
        }
        guard s[0] == "pgoutput", s[1] == "t", let confirmed = s[2].flatMap({ LSN(text: $0) }) else {
            throw Problem(description: "replication slot \(slot) is not a pgoutput slot of this database (or it was invalidated)")
        }
        let version = try db.query("SHOW server_version_num").rows.first?.first.flatMap { $0.flatMap { Int($0) } } ?? 0
        return Ready(tableOID: oid, schema: schema, name: name, confirmed: confirmed, sendsMessages: version >= 140000)
    }
}
