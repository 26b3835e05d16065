public import PostgresClient

/// The tables created by `migrate` and checked by `run` (docs/configuration.md, docs/operations.md).
public enum Schema {
    /// Session-level lock key serialising `migrate` runs against one database.
    static let migrationLockKey = 0x7265_706c_6d69_6772  // "replmigr"

    /// The bookkeeping table recording what `migrate` created and at which schema version.
    public static let versionTable = "replicator_schema"
    /// The schema version this release's `migrate` writes.
    public static let currentVersion = 2

    /// The messages table as `migrate` creates it (mapped column names), and its session index.
    public static func createMessagesTable(_ table: TableName, columns c: MessageColumns) -> [String] {
        let q = MessageColumns.quote
        var cols = [
            "\(q(c.messageID)) uuid PRIMARY KEY",
            "\(q(c.sessionID)) text NOT NULL",
            "\(q(c.role)) text NOT NULL",
            "\(q(c.content)) text NOT NULL",
            "\(q(c.region)) text NOT NULL",
            "\(q(c.createdAt)) timestamptz NOT NULL",
            "\(q(c.version)) bigint NOT NULL DEFAULT 1",
        ]
        if let r = c.replicatedAt { cols.append("\(q(r)) timestamptz NOT NULL DEFAULT now()") }
        if let a = c.attributes { cols.append("\(q(a)) jsonb") }
        return [
            "CREATE TABLE IF NOT EXISTS \(table.quoted) (\n    " + cols.joined(separator: ",\n    ") + ")",
            "CREATE INDEX IF NOT EXISTS \(table.quotedIndexName(suffix: "_session_created_idx")) ON \(table.quoted) (\(q(c.sessionID)), \(q(c.createdAt)))",
        ]
    }

    /// The trigger that fills an inserted row's missing message id with the id the daemon
    /// derives for the same seed-style event (``SeedID``), so that an application's plain
    /// `INSERT` of {session_id, role, content, region, created_at} works. It fires only for a row
    /// without an id (`WHEN`), so the applier's rows skip it.
    /// - Parameter digestFunction: `pgcrypto`'s `digest`, schema-qualified and quoted.
    public static func idTriggerStatements(_ table: TableName, columns c: MessageColumns, digestFunction: String) -> [String] {
        let q = MessageColumns.quote
        let function = (table.schema.map { "\"\($0)\"." } ?? "") + table.quotedIndexName(suffix: "_derive_message_id")
        let trigger = table.quotedIndexName(suffix: "_derive_message_id")
        let expr = SeedID.sql(sessionID: "NEW.\(q(c.sessionID))", region: "NEW.\(q(c.region))",
                              createdAt: "NEW.\(q(c.createdAt))", role: "NEW.\(q(c.role))",
                              content: "NEW.\(q(c.content))", digestFunction: digestFunction)
        return [
            """
            CREATE OR REPLACE FUNCTION \(function)() RETURNS trigger LANGUAGE plpgsql AS $rr$
            BEGIN
                IF NEW.\(q(c.messageID)) IS NULL THEN
                    NEW.\(q(c.messageID)) := \(expr);
                END IF;
                RETURN NEW;
            END
            $rr$
            """,
            "DROP TRIGGER IF EXISTS \(trigger) ON \(table.quoted)",
            // The WHEN clause is tested in C: a row with an id (every row the applier writes) never
            // enters PL/pgSQL, ~1.2 µs of backend CPU per row (docs/performance.md).
            """
            CREATE TRIGGER \(trigger) BEFORE INSERT ON \(table.quoted) FOR EACH ROW
            WHEN (NEW.\(q(c.messageID)) IS NULL) EXECUTE FUNCTION \(function)()
            """,
        ]
    }

    /// The bookkeeping tables' DDL, idempotent (`IF NOT EXISTS` throughout).
    public static func bookkeepingStatements() -> [String] {
        return [
            """
            CREATE TABLE IF NOT EXISTS replicator_schema (
                table_name text PRIMARY KEY,
                created_by_migrate boolean NOT NULL,
                schema_version int NOT NULL,
                migrated_at timestamptz NOT NULL DEFAULT now())
            """,
            """
            CREATE TABLE IF NOT EXISTS replicator_offsets (
                consumer_group text NOT NULL,
                topic text NOT NULL,
                partition int NOT NULL,
                next_offset bigint NOT NULL,
                last_record_at timestamptz,
                updated_at timestamptz,
                PRIMARY KEY (consumer_group, topic, partition))
            """,
            """
            CREATE TABLE IF NOT EXISTS replicator_message_tombstones (
                message_id uuid PRIMARY KEY,
                session_id text NOT NULL,
                version bigint NOT NULL,
                deleted_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS replicator_session_tombstones (
                session_id text PRIMARY KEY,
                deleted_at timestamptz NOT NULL)
            """,
            """
            CREATE TABLE IF NOT EXISTS replicator_dead_letters (
                id bigserial PRIMARY KEY,
                topic text,
                partition int,
                "offset" bigint,
                record_key bytea,
                payload bytea,
                error text,
                first_seen timestamptz,
                retried_at timestamptz,
                resolved boolean NOT NULL DEFAULT false)
            """,
            // One dead letter per record, however often the record is re-read (replays).
            """
            CREATE UNIQUE INDEX IF NOT EXISTS replicator_dead_letters_record_idx
                ON replicator_dead_letters (topic, partition, "offset")
            """,
        ]
    }

    /// What `migrate` did in one region.
    public struct MigrateReport: Sendable {
        /// What was created or changed.
        public var done: [String] = []
        /// Problems left for a person: each with the SQL that fixes it. Non-empty = not complete.
        public var problems: [TableProblem] = []
        /// Advice that does not make the migration incomplete.
        public var notes: [String] = []
    }

    /// Creates the bookkeeping tables, the messages table (when it does not exist) and its id
    /// trigger. Idempotent; concurrent runs are serialised by an advisory lock.
    ///
    /// A messages table that `migrate` did not create (no row in `replicator_schema`) is never
    /// altered unless `alterExistingTable`: it is inspected and what it lacks is reported with the
    /// SQL that fixes it.
    public static func migrate(_ db: PostgresConnection, table: TableName, columns: MessageColumns,
                               alterExistingTable: Bool = false) throws(PostgresError) -> MigrateReport {
        var report = MigrateReport()
        try db.execute("BEGIN")
        do {
            // `IF [NOT] EXISTS` DDL makes the server send "… already exists, skipping" notices,
            // which libpq would print raw on stderr: this transaction reports warnings only.
            try db.execute("SET LOCAL client_min_messages = warning")
            try db.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))")
            for s in bookkeepingStatements() { try db.execute(s) }
            let digest = try ensurePgcrypto(db, report: &report)
            let exists = try db.query("SELECT to_regclass($1) IS NOT NULL", [table.quoted]).rows.first?.first == "t"
            let ours = try db.query("SELECT created_by_migrate FROM replicator_schema WHERE table_name = $1",
                                    [table.description]).rows.first?.first == "t"
            if !exists {
                for s in createMessagesTable(table, columns: columns) { try db.execute(s) }
                try db.query("""
                    INSERT INTO replicator_schema (table_name, created_by_migrate, schema_version) VALUES ($1, true, $2)
                    ON CONFLICT (table_name) DO UPDATE SET created_by_migrate = true, schema_version = $2, migrated_at = now()
                    """, [table.description, String(currentVersion)])
                report.done.append("created table \(table)")
            } else if ours || alterExistingTable {
                let found = try inspect(db, table: table, columns: columns)
                for p in found {
                    guard let fix = p.fix else { report.problems.append(p); continue }
                    try db.execute(fix)
                    report.done.append("\(p.message): ran \(fix)")
                }
                let v = MessageColumns.quote(columns.version)
                try db.execute("ALTER TABLE \(table.quoted) ALTER COLUMN \(v) SET DEFAULT 1")
                try db.query("""
                    INSERT INTO replicator_schema (table_name, created_by_migrate, schema_version) VALUES ($1, $2, $3)
                    ON CONFLICT (table_name) DO UPDATE SET schema_version = $3, migrated_at = now()
                    """, [table.description, ours ? "t" : "f", String(currentVersion)])
            } else {
                let found = try inspect(db, table: table, columns: columns)
                report.problems += found
                let fixes = idTriggerStatements(table, columns: columns, digestFunction: digest ?? "digest")
                    + ["ALTER TABLE \(table.quoted) ALTER COLUMN \(MessageColumns.quote(columns.version)) SET DEFAULT 1"]
                if try !hasIDTrigger(db, table: table) {
                    report.notes.append("""
                        table \(table) was not created by migrate, so it was not altered. For an application that inserts \
                        rows without \(columns.messageID) (seed-style), run (or `migrate --alter-existing-table`):
                        \(fixes.map { $0 + ";" }.joined(separator: "\n"))
                        """)
                }
            }
            if let digest, exists == false || ours || alterExistingTable {
                for s in idTriggerStatements(table, columns: columns, digestFunction: digest) { try db.execute(s) }
            }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
        return report
    }

    /// Creates `pgcrypto` if it is missing and this role may; returns its `digest` function,
    /// schema-qualified, or nil after recording what a DBA must run.
    static func ensurePgcrypto(_ db: PostgresConnection, report: inout MigrateReport) throws(PostgresError) -> String? {
        let find = "SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
        if let schema = try db.query(find).rows.first?.first ?? nil { return "\(schema).digest" }
        try db.execute("SAVEPOINT rr_pgcrypto")
        do throws(PostgresError) {
            try db.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")
            try db.execute("RELEASE SAVEPOINT rr_pgcrypto")
            report.done.append("created extension pgcrypto")
        } catch {
            try db.execute("ROLLBACK TO SAVEPOINT rr_pgcrypto")
            let database = try db.query("SELECT quote_ident(current_database())").rows.first?.first ?? nil
            report.problems.append(TableProblem(
                message: "extension pgcrypto (SHA-1 for the message id trigger) is missing and this role may not create it (\(error.message))",
                fix: nil,
                dba: "CREATE EXTENSION pgcrypto;  -- as a superuser or the database owner, in database \(database ?? "?"), then run migrate again"))
            return nil
        }
        return try db.query(find).rows.first?.first?.map { "\($0).digest" }
    }

    static func hasIDTrigger(_ db: PostgresConnection, table: TableName) throws(PostgresError) -> Bool {
        try db.query("""
            SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2 AND NOT tgisinternal)
            """, [table.quoted, String((table.name + "_derive_message_id").utf8.prefix(63)) ?? ""]).rows.first?.first == "t"
    }

    /// One thing the messages table lacks, and the SQL that fixes it (nil when no statement can).
    public struct TableProblem: Sendable, Hashable, CustomStringConvertible {
        public var message: String
        public var fix: String?
        /// What a database administrator must run (privileged), when `fix` cannot be run by migrate.
        public var dba: String?

        public init(message: String, fix: String?, dba: String? = nil) {
            self.message = message
            self.fix = fix
            self.dba = dba
        }

        public var description: String {
            if let fix { return "\(message); fix: \(fix);" }
            if let dba { return "\(message); a DBA must run: \(dba)" }
            return message
        }
    }

    /// Inspects the real messages table: every mapped column exists with a compatible type, a
    /// unique index covers exactly the id column, and no other column would make an insert fail.
    /// An absent table is one problem (run `migrate`).
    public static func inspect(_ db: PostgresConnection, table: TableName,
                               columns: MessageColumns = .standard) throws(PostgresError) -> [TableProblem] {
        let t = table.quoted
        guard try db.query("SELECT to_regclass($1) IS NOT NULL", [t]).rows.first?.first == "t" else {
            return [TableProblem(message: "table \(table) does not exist", fix: nil, dba: nil)]
        }
        let r = try db.query("""
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                   a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
            FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """, [t])
        var found: [String: (type: String, notNull: Bool, hasDefault: Bool)] = [:]
        for row in r.rows {
            found[row[0] ?? ""] = (row[1] ?? "", row[2] == "t", row[3] == "t")
        }
        var problems: [TableProblem] = []
        let q = MessageColumns.quote
        for (field, column, expected) in columns.all {
            guard let have = found[column] else {
                let extra = field == "version" ? " NOT NULL DEFAULT 1" : ""
                problems.append(TableProblem(message: "table \(table) has no column \(q(column)) (for the event's \(field))",
                                             fix: "ALTER TABLE \(t) ADD COLUMN \(q(column)) \(expected.ddl)\(extra)"))
                continue
            }
            if !expected.accepts(have.type) {
                problems.append(TableProblem(
                    message: "column \(q(column)) of table \(table) is \(have.type); the event's \(field) needs \(expected.ddl)",
                    fix: "ALTER TABLE \(t) ALTER COLUMN \(q(column)) TYPE \(expected.ddl) USING \(q(column))::\(expected.ddl)"))
            }
        }
        let mapped = Set(columns.all.map(\.column))
        for row in r.rows {
            guard let name = row[0], !mapped.contains(name), let have = found[name], have.notNull, !have.hasDefault else { continue }
            problems.append(TableProblem(
                message: "column \(q(name)) of table \(table) is NOT NULL without a default and receives no event field: every insert would fail",
                fix: "ALTER TABLE \(t) ALTER COLUMN \(q(name)) DROP NOT NULL"))
        }
        if found[columns.messageID] != nil {
            let unique = try db.query("""
                SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                               WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indnkeyatts = 1
                                 AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attname = $2)
                """, [t, columns.messageID]).rows.first?.first == "t"
            if !unique {
                problems.append(TableProblem(
                    message: "table \(table) has no unique index on \(q(columns.messageID)) alone (the upsert's conflict target)",
                    fix: "CREATE UNIQUE INDEX \(table.quotedIndexName(suffix: "_\(columns.messageID)_key")) ON \(t) (\(q(columns.messageID)))"))
            }
        }
        return problems
    }

    /// When the database's default `TimeZone` (the server's setting, or `ALTER DATABASE … SET`,
    /// as a new session of this role sees it) is not UTC: the warning and its fix. An
    /// application inserting offset-less timestamps would store other instants than the daemon.
    public static func timeZoneWarning(_ db: PostgresConnection) throws(PostgresError) -> String? {
        let r = try db.query("""
            SELECT current_setting('TimeZone'), quote_ident(current_database()),
                   (SELECT utc_offset = interval '0' AND NOT is_dst FROM pg_timezone_names WHERE name = current_setting('TimeZone'))
            """)
        guard let row = r.rows.first, let zone = row[0] else { return nil }
        if ["UTC", "Etc/UTC", "UCT", "Etc/UCT", "GMT", "Etc/GMT", "Zulu", "Etc/Zulu", "Universal", "Etc/Universal"].contains(zone) { return nil }
        return "the database's default TimeZone is \(zone), not UTC: rows an application inserts with offset-less created_at "
            + "(as Python's datetime.utcnow().isoformat() writes) would store other instants than the daemon writes. "
            + "Fix: ALTER DATABASE \(row[1] ?? "?") SET TimeZone = 'UTC'; (and the same for the application's role, "
            + "if it sets one: ALTER ROLE … SET TimeZone = 'UTC';)"
    }

    /// Creates the tables with the standard columns (tests and tools).
    public static func migrate(_ db: PostgresConnection, table: TableName) throws(PostgresError) {
        _ = try migrate(db, table: table, columns: .standard)
    }

    /// The tables that `migrate` would create but that are missing.
    public static func missingTables(_ db: PostgresConnection, table: TableName) throws(PostgresError) -> [String] {
        try check(db, table: table).missing
    }

    /// The tables that `migrate` would create but that are missing, and the schema-qualified
    /// names of the bookkeeping tables as this session's `search_path` finds them now (where
    /// `migrate` created them). Every statement of the apply path then names them qualified,
    /// so a temporary table of the same name can never stand in for them, nor the reverse.
    public static func check(_ db: PostgresConnection, table: TableName) throws(PostgresError) -> (missing: [String], tables: BookkeepingTables) {
        let names = [table.quoted] + BookkeepingTables.names
        let r = try db.query("""
            SELECT (SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE c.oid = to_regclass(x.n))
            FROM unnest($1::text[]) WITH ORDINALITY AS x(n, i) ORDER BY i
            """, [PostgresArray.text(names)])
        var missing: [String] = []
        var found: [String: String] = [:]
        for (name, row) in zip(names, r.rows) {
            if let q = row.first ?? nil { found[name] = q } else { missing.append(name) }
        }
        let tables = BookkeepingTables(
            offsets: found["replicator_offsets"] ?? "replicator_offsets",
            messageTombstones: found["replicator_message_tombstones"] ?? "replicator_message_tombstones",
            sessionTombstones: found["replicator_session_tombstones"] ?? "replicator_session_tombstones",
            deadLetters: found["replicator_dead_letters"] ?? "replicator_dead_letters")
        return (missing, tables)
    }
}

/// The bookkeeping tables' names as SQL (schema-qualified and quoted once resolved by
/// ``Schema/check(_:table:)``).
public struct BookkeepingTables: Sendable, Hashable {
    public var offsets: String
    public var messageTombstones: String
    public var sessionTombstones: String
    public var deadLetters: String

    public init(offsets: String, messageTombstones: String, sessionTombstones: String, deadLetters: String) {
        self.offsets = offsets
        self.messageTombstones = messageTombstones
        self.sessionTombstones = sessionTombstones
        self.deadLetters = deadLetters
    }

    static let names = ["replicator_offsets", "replicator_message_tombstones", "replicator_session_tombstones", "replicator_dead_letters"]

    /// The unqualified names (resolved through `search_path` by the server): only until
    /// ``Schema/check(_:table:)`` has run.
    public static let unqualified = BookkeepingTables(
        offsets: "replicator_offsets", messageTombstones: "replicator_message_tombstones",
        sessionTombstones: "replicator_session_tombstones", deadLetters: "replicator_dead_letters")

    /// The same tables in `schema` (e.g. `pg_temp` for a dry run's private copies).
    public static func inSchema(_ schema: String) -> BookkeepingTables {
        BookkeepingTables(offsets: "\(schema).replicator_offsets", messageTombstones: "\(schema).replicator_message_tombstones",
                          sessionTombstones: "\(schema).replicator_session_tombstones", deadLetters: "\(schema).replicator_dead_letters")
    }
}
