import Foundation

/// The SQL text, built once per table name.
struct Statements {
    /// The table's name as the server resolves it at the time (`schema.name`), whatever the
    /// configured spelling (`messages` or `public.messages`); the configured text when the
    /// table does not exist. Every lock key derives from it.
    let resolvedName: String
    /// The table's advisory lock key (int4), shared by every writer of the table.
    let tableKey: String
    /// The table's key as builds before bucket locks computed it, from the table's name as
    /// configured (``ApplyLocks/Space/legacyPartitions``).
    let legacyTableKey: String
    /// The table's key, shared, and the earlier releases' table key, shared: the first locks of
    /// every applier (``ApplyLocks``). The second makes an older `verify --repair`, or an older
    /// build that locked the whole table, wait for this version's appliers too.
    let sharedLock: String
    /// Taken by writers that are tied to no session (`verify --repair`): excludes every
    /// applier of the table, of this version and of earlier ones (both table keys).
    let exclusiveLock: String
    /// The keys of ``ApplyLocks`` in the given order: `$1` spaces (`int4[]`), `$2` numbers
    /// (`int4[]`), `$3` 1 for exclusive, 0 for shared (`int4[]`). A space's key is `hashtext` of its name and the
    /// resolved table name (``legacyTableKey`` for the earlier releases' partition keys, space -1);
    /// each lock is `(space key, number)`.
    let rowLocks: String
    let sessionTombstones: String
    let messageTombstones: String
    /// Upserts every row of its arrays; an upsert that would replace a stored version of its
    /// message with another session id or creation time changes nothing and is named in the
    /// transaction's setting `region_replicator.identity_changed` (docs/events.md, apply rules).
    let upserts: String
    /// Fails the transaction with SQLSTATE ``ApplyFailure/identityChangedCode`` when the upsert
    /// statement before it refused a version.
    let identityCheck: String
    let deadLetters: String
    let offsets: String
    let offsetCheck: String

    init(table: TableName, tables b: BookkeepingTables, columns c: MessageColumns) {
        let t = table.quoted
        let q = MessageColumns.quote
        func utc(_ timestamp: String) -> String { "to_char(\(timestamp) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')" }
        let id = q(c.messageID), session = q(c.sessionID), created = q(c.createdAt), version = q(c.version)
        resolvedName = """
            coalesce((SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE c.oid = pg_catalog.to_regclass($$\(t)$$)), $$\(table.description)$$)
            """
        tableKey = "hashtext('region-replicator apply ' || \(resolvedName))"
        legacyTableKey = "hashtext('region-replicator apply ' || $$\(table.description)$$)"
        sharedLock = "SELECT pg_advisory_xact_lock_shared(\(tableKey)::bigint), pg_advisory_xact_lock_shared(\(legacyTableKey)::bigint)"
        exclusiveLock = "SELECT pg_advisory_xact_lock(\(tableKey)::bigint), pg_advisory_xact_lock(\(legacyTableKey)::bigint)"
        // The volatile lock calls are evaluated after the ORDER BY (PostgreSQL evaluates a
        // target list holding volatile functions after the sort), so in the keys' given order.
        rowLocks = """
            SELECT count(*) FROM (
                SELECT CASE WHEN k.x = 1 THEN pg_advisory_xact_lock(CASE k.s WHEN 0 THEN r.offsets WHEN -1 THEN r.legacy ELSE r.rows END, k.n)
                            ELSE pg_advisory_xact_lock_shared(CASE k.s WHEN 0 THEN r.offsets WHEN -1 THEN r.legacy ELSE r.rows END, k.n) END
                FROM unnest($1::int4[], $2::int4[], $3::int4[]) WITH ORDINALITY AS k(s, n, x, i),
                     (SELECT hashtext('region-replicator offsets ' || name) AS offsets,
                             hashtext('region-replicator rows ' || name) AS rows,
                             \(legacyTableKey) AS legacy
                      FROM (SELECT \(resolvedName) AS name) t) r
                ORDER BY k.i) locks
            """
        // Each statement answers (applied, same-version duplicates, ordinalities of the applied
        // rows). When every row applied, the duplicate count is 0 and the ordinalities are all
        // rows: the two counting subqueries (InitPlans, evaluated only when referenced) are then
        // skipped and the third column is NULL — see `RegionApplier.account`.
        // Applied = the tombstone moved forward; the delete removes what it covers either way.
        sessionTombstones = """
            WITH s AS (SELECT * FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS s(session_id, deleted_at, i)),
            t AS (INSERT INTO \(b.sessionTombstones) AS t (session_id, deleted_at)
                  SELECT session_id, deleted_at FROM s
                  ON CONFLICT (session_id) DO UPDATE SET deleted_at = excluded.deleted_at
                  WHERE t.deleted_at < excluded.deleted_at
                  RETURNING t.session_id),
            d AS (DELETE FROM \(t) m USING s WHERE m.\(session) = s.session_id AND m.\(created) <= s.deleted_at
                  RETURNING 1),
            n AS MATERIALIZED (SELECT (SELECT count(*) FROM t) AS applied, (SELECT count(*) FROM s) AS total)
            SELECT n.applied,
                   CASE WHEN n.applied < n.total THEN (SELECT count(*) FROM s JOIN \(b.sessionTombstones) o
                      ON o.session_id = s.session_id AND o.deleted_at = s.deleted_at) ELSE 0 END AS same_version,
                   CASE WHEN n.applied < n.total THEN (SELECT string_agg(s.i::text, ',') FROM t JOIN s USING (session_id)) END
                       AS applied_ordinals,
                   (SELECT count(*) FROM d) AS deleted_messages
            FROM n
            """
        messageTombstones = """
            WITH d AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[]) WITH ORDINALITY
                       AS d(message_id, session_id, version, deleted_at, i)),
            t AS (INSERT INTO \(b.messageTombstones) AS t (message_id, session_id, version, deleted_at)
                  SELECT message_id, session_id, version, deleted_at FROM d
                  ON CONFLICT (message_id) DO UPDATE
                  SET version = excluded.version, session_id = excluded.session_id, deleted_at = excluded.deleted_at
                  WHERE t.version < excluded.version
                  RETURNING t.message_id),
            x AS (DELETE FROM \(t) m USING d WHERE m.\(id) = d.message_id AND m.\(version) <= d.version
                  RETURNING 1),
            n AS MATERIALIZED (SELECT (SELECT count(*) FROM t) AS applied, (SELECT count(*) FROM d) AS total)
            SELECT n.applied,
                   CASE WHEN n.applied < n.total THEN (SELECT count(*) FROM d JOIN \(b.messageTombstones) o
                      ON o.message_id = d.message_id AND o.version = d.version) ELSE 0 END AS same_version,
                   CASE WHEN n.applied < n.total THEN (SELECT string_agg(d.i::text, ',') FROM t JOIN d USING (message_id)) END
                       AS applied_ordinals
            FROM n
            """
        // The NOT EXISTS pre-checks skip duplicates, stale versions, lost tie-breaks and
        // tombstoned messages without taking a row lock; ON CONFLICT … WHERE keeps the version
        // guard under races. Equal versions: the greater `ContentHash` wins.
        let attributes = c.attributes.map(q)
        func hash(_ row: String, attributes rowAttributes: String?) -> String {
            ContentHash.sql(content: "\(row).\(q(c.content))", attributes: rowAttributes)
        }
        let existing = hash("e", attributes: attributes.map { "e.\($0)" })
        let incoming = ContentHash.sql(content: "u.content", attributes: attributes.map { _ in "u.attributes::jsonb" })
        let stored = hash("m", attributes: attributes.map { "m.\($0)" })
        let excluded = hash("excluded", attributes: attributes.map { "excluded.\($0)" })
        var insertColumns = [c.messageID, c.sessionID, c.role, c.content, c.region, c.createdAt, c.version].map(q)
        var values = ["u.message_id", "u.session_id", "u.role", "u.content", "u.region", "u.created_at", "u.version"]
        var updates = insertColumns.dropFirst().map { "\($0) = excluded.\($0)" }
        if let attributes {
            insertColumns.append(attributes)
            values.append("u.attributes::jsonb")
            updates.append("\(attributes) = excluded.\(attributes)")
        }
        if let r = c.replicatedAt.map(q) {
            insertColumns.append(r)
            values.append("now()")
            updates.append("\(r) = now()")
        }
        upserts = """
            WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                           $6::timestamptz[], $7::bigint[], $8::text[]) WITH ORDINALITY
                       AS u(message_id, session_id, role, content, region, created_at, version, attributes, i)),
            ins AS (INSERT INTO \(t) AS m (\(insertColumns.joined(separator: ", ")))
                    SELECT \(values.joined(separator: ", ")) FROM u
                    WHERE NOT EXISTS (SELECT 1 FROM \(t) e WHERE e.\(id) = u.message_id
                                      AND (e.\(version) > u.version OR (e.\(version) = u.version AND \(existing) >= \(incoming))))
                      AND NOT EXISTS (SELECT 1 FROM \(b.messageTombstones) mt
                                      WHERE mt.message_id = u.message_id AND mt.version >= u.version)
                      AND NOT EXISTS (SELECT 1 FROM \(b.sessionTombstones) st
                                      WHERE st.session_id = u.session_id AND st.deleted_at >= u.created_at)
                    ON CONFLICT (\(id)) DO UPDATE
                    SET \(updates.joined(separator: ", "))
                    WHERE (m.\(version) < excluded.\(version) OR (m.\(version) = excluded.\(version) AND \(excluded) > \(stored)))
                      AND m.\(session) = excluded.\(session) AND m.\(created) = excluded.\(created)
                    RETURNING m.\(id) AS message_id),
            n AS MATERIALIZED (SELECT (SELECT count(*) FROM ins) AS applied, (SELECT count(*) FROM u) AS total)
            SELECT n.applied,
                   CASE WHEN n.applied < n.total THEN
                       (SELECT count(*) FROM u JOIN \(t) e ON e.\(id) = u.message_id AND e.\(version) = u.version
                                                         AND \(existing) = \(incoming)) ELSE 0 END AS same_version,
                   CASE WHEN n.applied < n.total THEN (SELECT string_agg(u.i::text, ',') FROM ins JOIN u USING (message_id)) END
                       AS applied_ordinals,
                   set_config('region_replicator.identity_changed', coalesce(CASE WHEN n.applied < n.total THEN
                       (SELECT format('identity_changed: message %s version %s has session_id %s and created_at %s, '
                                      || 'but the stored version %s has session_id %s and created_at %s: '
                                      || 'a message''s session_id and created_at never change',
                                      u.message_id, u.version, to_json(u.session_id), \(utc("u.created_at")),
                                      e.\(version), to_json(e.\(session)), \(utc("e.\(created)")))
                        FROM u JOIN \(t) e ON e.\(id) = u.message_id
                        WHERE (e.\(session) IS DISTINCT FROM u.session_id OR e.\(created) IS DISTINCT FROM u.created_at)
                          AND (e.\(version) < u.version OR (e.\(version) = u.version AND \(existing) < \(incoming)))
                          AND NOT EXISTS (SELECT 1 FROM \(b.messageTombstones) mt
                                          WHERE mt.message_id = u.message_id AND mt.version >= u.version)
                          AND NOT EXISTS (SELECT 1 FROM \(b.sessionTombstones) st
                                          WHERE st.session_id = u.session_id AND st.deleted_at >= u.created_at)
                        ORDER BY u.i LIMIT 1) END, ''), true) AS identity_changed
            FROM n
            """
        // Raises the upserts' refusal (set by the statement before it) as an error of its own
        // class-23 SQLSTATE: the batch rolls back and is bisected, so the refused record alone
        // becomes a dead letter (`RegionApplier.isolate`).
        identityCheck = """
            DO $identity$
            BEGIN
                IF coalesce(current_setting('region_replicator.identity_changed', true), '') <> '' THEN
                    RAISE EXCEPTION USING MESSAGE = current_setting('region_replicator.identity_changed'),
                                          ERRCODE = '\(ApplyFailure.identityChangedCode)';
                END IF;
            END
            $identity$
            """
        deadLetters = """
            INSERT INTO \(b.deadLetters) (topic, partition, "offset", record_key, payload, error, first_seen)
            SELECT topic, p, o, k, v, e, now()
            FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bytea[], $5::bytea[], $6::text[]) AS x(topic, p, o, k, v, e)
            ON CONFLICT (topic, partition, "offset") DO NOTHING
            """
        offsets = """
            INSERT INTO \(b.offsets) AS o (consumer_group, topic, partition, next_offset, last_record_at, updated_at)
            SELECT $1, $2, p, n, ts, now() FROM unnest($3::int[], $4::bigint[], $5::timestamptz[]) AS x(p, n, ts)
            ON CONFLICT (consumer_group, topic, partition) DO UPDATE
            SET next_offset = excluded.next_offset, last_record_at = excluded.last_record_at, updated_at = now()
            WHERE o.next_offset < excluded.next_offset
            """
        // The stored next offsets of the batch's partitions must be the ones the pipeline
        // believes (set by the statement before, in the same pipeline): a restore, a manual
        // reset or another writer moved them otherwise, and the batch must not apply.
        offsetCheck = """
            DO $check$
            DECLARE moved text;
            BEGIN
                SELECT string_agg(format('partition %s stored %s, expected %s', e.p,
                                         coalesce(o.next_offset::text, 'none'), coalesce(e.n::text, 'none')), '; ')
                INTO moved
                FROM (SELECT split_part(x, ':', 1)::int AS p, nullif(split_part(x, ':', 2), '')::bigint AS n
                      FROM unnest(string_to_array(current_setting('region_replicator.expected_offsets'), ',')) AS x) e
                LEFT JOIN \(b.offsets) o ON o.consumer_group = current_setting('region_replicator.consumer_group')
                    AND o.topic = current_setting('region_replicator.topic') AND o.partition = e.p
                WHERE o.next_offset IS DISTINCT FROM e.n;
                IF moved IS NOT NULL THEN
                    RAISE EXCEPTION 'stored offsets moved: %', moved USING ERRCODE = '\(ApplyFailure.offsetsMovedCode)';
                END IF;
            END
            $check$
            """
    }
}
