public import PostgresClient

/// The tables of docs/events.md, created by `migrate` and checked by `run`.
public enum Schema {
    /// Session-level lock key serialising `migrate` runs against one database.
    static let migrationLockKey = 0x7265_706c_6d69_6772  // "replmigr"

    /// The DDL, idempotent (`IF NOT EXISTS` throughout).
    public static func statements(table: TableName) -> [String] {
        let t = table.quoted
        return [
            """
            CREATE TABLE IF NOT EXISTS \(t) (
                message_id uuid PRIMARY KEY,
                session_id text NOT NULL,
                role text NOT NULL,
                content text NOT NULL,
                region text NOT NULL,
                created_at timestamptz NOT NULL,
                version bigint NOT NULL,
                replicated_at timestamptz NOT NULL DEFAULT now())
            """,
            "CREATE INDEX IF NOT EXISTS \(table.quotedIndexName(suffix: "_session_created_idx")) ON \(t) (session_id, created_at)",
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

    /// Creates the tables (idempotent; concurrent runs are serialised by an advisory lock).
    public static func migrate(_ db: PostgresConnection, table: TableName) throws(PostgresError) {
        try db.execute("BEGIN")
        do {
            try db.query("SELECT pg_advisory_xact_lock(\(migrationLockKey))")
            for s in statements(table: table) { try db.execute(s) }
            try db.execute("COMMIT")
        } catch {
            try? db.execute("ROLLBACK")
            throw error
        }
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
