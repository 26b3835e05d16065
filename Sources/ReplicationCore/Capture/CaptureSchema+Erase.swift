import Foundation
import PostgresClient

extension CaptureSchema {
    /// The prefix of the logical message `replicator_erase_session` writes; capture turns each
    /// one into a `session.deleted` event.
    public static let sessionErasurePrefix = "region_replicator.session.deleted"

    /// The function `replicator_erase_session(session_id text) RETURNS bigint` of a capturing
    /// region: erases the session's messages locally the way the applier applies a
    /// `session.deleted` event (the same advisory locks, the session tombstone, the DELETE of
    /// the rows created at or before the erasure instant) and writes a transactional logical
    /// message (``sessionErasurePrefix``) that capture publishes as one `session.deleted` event.
    ///
    /// The erasure instant is the latest of the clock, the newest `created_at` of the session's
    /// rows and the session's existing tombstone: every row of the session the transaction sees
    /// is erased, in every region. The message is written before the DELETE, so capture knows
    /// the rows' DELETEs that follow belong to the erasure and publishes none of them.
    ///
    /// `messagesTable` and `sessionTombstones` are schema-qualified and quoted (resolved once by
    /// the caller, as the apply path resolves them); the function runs with a fixed `search_path`.
    static func eraseSessionFunction(messagesTable: String, sessionTombstones: String, columns: MessageColumns) -> String {
        let q = MessageColumns.quote
        let session = q(columns.sessionID), created = q(columns.createdAt)
        // The apply path derives its lock keys from the table's resolved name (Statements.resolvedName).
        let lockName = "'" + messagesTable.replacingOccurrences(of: "'", with: "''") + "'"
        return """
            CREATE OR REPLACE FUNCTION replicator_erase_session(erased_session text) RETURNS bigint
            LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
            AS $replicator_erase_session$
            DECLARE
                lock_name text;
                bytes bytea;
                h bigint := -3750763034362895579;  -- FNV-1a 64 offset basis 0xcbf29ce484222325, as int8
                u numeric;
                erased_at timestamptz;
                erased bigint;
            BEGIN
                IF erased_session IS NULL OR erased_session = '' OR octet_length(erased_session) > 256 THEN
                    RAISE EXCEPTION 'replicator_erase_session: a session id is 1 to 256 bytes of UTF-8' USING ERRCODE = '22023';
                END IF;
                -- The apply path's locks (docs/design.md, Locks): the table's key shared, then the
                -- session's row bucket exclusively, FNV-1a 64 of 's' and the id's bytes mod 1024.
                lock_name := \(lockName);
                PERFORM pg_advisory_xact_lock_shared(hashtext('region-replicator apply ' || lock_name)::bigint);
                bytes := '\\x73'::bytea || convert_to(erased_session, 'UTF8');
                FOR i IN 0 .. length(bytes) - 1 LOOP
                    h := h # get_byte(bytes, i);
                    u := (CASE WHEN h < 0 THEN h::numeric + 18446744073709551616 ELSE h::numeric END)
                         * 1099511628211 % 18446744073709551616;
                    h := (CASE WHEN u >= 9223372036854775808 THEN u - 18446744073709551616 ELSE u END)::bigint;
                END LOOP;
                PERFORM pg_advisory_xact_lock(hashtext('region-replicator rows ' || lock_name), (h & 1023)::int);
                SELECT greatest(clock_timestamp(),
                                (SELECT max(m.\(created)) FROM \(messagesTable) m WHERE m.\(session) = erased_session),
                                (SELECT t.deleted_at FROM \(sessionTombstones) t WHERE t.session_id = erased_session))
                  INTO erased_at;
                INSERT INTO \(sessionTombstones) AS t (session_id, deleted_at) VALUES (erased_session, erased_at)
                    ON CONFLICT (session_id) DO UPDATE SET deleted_at = excluded.deleted_at
                    WHERE t.deleted_at < excluded.deleted_at;
                PERFORM pg_logical_emit_message(true, '\(sessionErasurePrefix)',
                    json_build_object('session_id', erased_session,
                                      'occurred_at', to_char(erased_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))::text);
                DELETE FROM \(messagesTable) m WHERE m.\(session) = erased_session AND m.\(created) <= erased_at;
                GET DIAGNOSTICS erased = ROW_COUNT;
                RETURN erased;
            END
            $replicator_erase_session$
            """
    }

    /// Creates or replaces `replicator_erase_session` (idempotent).
    /// - Returns: a line for the report when the function was created or changed.
    static func migrateEraseFunction(_ db: PostgresConnection, table: TableName, columns: MessageColumns) throws(PostgresError) -> String? {
        // Before 14 pgoutput cannot send the function's logical message: an erasure would
        // never be published, so there is no function to call.
        let version = try db.query("SHOW server_version_num").rows.first?.first.flatMap { $0.flatMap { Int($0) } } ?? 0
        guard version >= 140000 else { return nil }
        let (missing, tables) = try Schema.check(db, table: table)
        guard missing.isEmpty,
              let resolved = try db.query("""
                  SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid = to_regclass($1)
                  """, [table.quoted]).rows.first?.first ?? nil else { return nil }
        let sql = eraseSessionFunction(messagesTable: resolved, sessionTombstones: tables.sessionTombstones, columns: columns)
        let before = try db.query("SELECT md5(pg_get_functiondef(to_regprocedure('replicator_erase_session(text)')))").rows.first?.first ?? nil
        try db.execute(sql)
        let after = try db.query("SELECT md5(pg_get_functiondef(to_regprocedure('replicator_erase_session(text)')))").rows.first?.first ?? nil
        return before == after ? nil : "function replicator_erase_session(session_id): \(before == nil ? "created" : "replaced") (erases a session; capture publishes session.deleted)"
    }
}
