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
        let names = [table.quoted, "replicator_offsets", "replicator_message_tombstones",
                     "replicator_session_tombstones", "replicator_dead_letters"]
        let r = try db.query("SELECT to_regclass(n) IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS x(n, i) ORDER BY i",
                             [PostgresArray.text(names)])
        return zip(names, r.rows).compactMap { name, row in row.first == "t" ? name : nil }
    }
}
