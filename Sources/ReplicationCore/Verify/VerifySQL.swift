import Foundation

/// The one place that knows how `verify` and `verify --repair` see a region's messages table in
/// SQL: its column names and the expressions that fingerprint a row.
///
/// Everything the verifier sends to Postgres is built from these fragments, so a change of column
/// names or of the content hash (the equal-version tie-break: among rows of the same version, the
/// greater content hash wins) is made here and nowhere else.
public struct VerifySchema: Sendable, Hashable {
    /// Column names of the messages table (`apply.columns`; quoted identifiers are built from them).
    public typealias Columns = MessageColumns

    public var table: TableName
    public var columns: Columns

    public init(table: TableName, columns: Columns = .standard) {
        self.table = table
        self.columns = columns
    }

    /// `alias."column"` for one of ``columns``.
    public func column(_ alias: String, _ keyPath: KeyPath<Columns, String>) -> String {
        "\(alias).\(Self.identifier(columns[keyPath: keyPath]))"
    }

    /// `alias."attributes"` as `jsonb`, or `NULL::jsonb` when the table stores none.
    func attributes(_ alias: String) -> String {
        columns.attributes.map { "\(alias).\(Self.identifier($0))" } ?? "NULL::jsonb"
    }

    static func identifier(_ name: String) -> String { "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\"" }

    /// The content hash of the row `alias` as a `bytea` expression — the apply path's own
    /// (``ContentHash``: content, a zero byte, attributes): the equal-version tie-break (greater
    /// wins) and part of every row's fingerprint.
    public func contentHash(_ alias: String) -> String {
        ContentHash.sql(content: column(alias, \.content), attributes: columns.attributes.map { "\(alias).\(Self.identifier($0))" })
    }

    /// Microseconds since the epoch of a `timestamptz` expression (no time zone dependence).
    static func micros(_ expression: String) -> String {
        "(extract(epoch FROM \(expression)) * 1000000)::bigint"
    }

    /// A `bigint` hash of everything two regions must agree on for one row: id, version, content
    /// hash and the other replicated columns (`replicated_at` is per region and left out).
    func rowFingerprint(_ alias: String) -> String {
        "hashtextextended(concat_ws('|', 'm', \(column(alias, \.messageID)), \(column(alias, \.version)), "
            + "encode(\(contentHash(alias)), 'hex'), length(\(column(alias, \.sessionID))), \(column(alias, \.sessionID)), "
            + "\(column(alias, \.role)), \(column(alias, \.region)), \(Self.micros(column(alias, \.createdAt)))), 0)"
    }

    /// The first 32 bits of a uuid as a non-negative `bigint` (uuids order bytewise in Postgres,
    /// so a range of these is an index range of the primary key).
    static func uuidKey(_ expression: String) -> String {
        "('x' || left(\(expression)::text, 8))::bit(32)::bigint"
    }

    /// A session id hashed into the same 32-bit key space (session tombstones have no uuid).
    static let sessionKey = "((hashtextextended(s.session_id, 0) >> 32) + 2147483648)"

    // MARK: - Statements

    /// Segment digests of the uuid space (rows and message tombstones) inside `[$1, $2)`:
    /// `$3` the range start, `$4` the segment width, `$5` an optional session filter.
    /// Returns (segment, count, xor of item hashes). `b`: the region's bookkeeping tables, as
    /// resolved at connect (``Schema/check(_:table:)``), like every name in these statements.
    func uuidSegmentDigests(_ b: BookkeepingTables) -> String {
        let m = "m", t = table.quoted
        return """
            WITH items AS (
                SELECT \(Self.uuidKey(column(m, \.messageID))) AS k, \(rowFingerprint(m)) AS h
                FROM \(t) m
                WHERE \(column(m, \.messageID)) >= $1::uuid AND ($2::uuid IS NULL OR \(column(m, \.messageID)) < $2::uuid)
                  AND ($5::text IS NULL OR \(column(m, \.sessionID)) = $5::text)
                UNION ALL
                SELECT \(Self.uuidKey("t.message_id")), hashtextextended(concat_ws('|', 't', t.message_id, t.version), 0)
                FROM \(b.messageTombstones) t
                WHERE t.message_id >= $1::uuid AND ($2::uuid IS NULL OR t.message_id < $2::uuid)
                  AND ($5::text IS NULL OR t.session_id = $5::text))
            SELECT (k - $3::bigint) / $4::bigint AS \(SegmentDigestRow.segment), count(*) AS \(SegmentDigestRow.items),
                   bit_xor(h) AS \(SegmentDigestRow.xor)
            FROM items GROUP BY 1
            """
    }

    /// Segment digests of the session-tombstone space, parameters as ``uuidSegmentDigests``
    /// except that `$1`/`$2` are the key bounds as `bigint`.
    static func sessionSegmentDigests(_ b: BookkeepingTables) -> String {
        """
        WITH items AS (
            SELECT \(sessionKey) AS k,
                   hashtextextended(concat_ws('|', 's', s.session_id, \(micros("s.deleted_at"))), 0) AS h
            FROM \(b.sessionTombstones) s
            WHERE $5::text IS NULL OR s.session_id = $5::text)
        SELECT (k - $3::bigint) / $4::bigint AS \(SegmentDigestRow.segment), count(*) AS \(SegmentDigestRow.items),
               bit_xor(h) AS \(SegmentDigestRow.xor)
        FROM items WHERE k >= $1::bigint AND k < $2::bigint GROUP BY 1
        """
    }

    /// The items of the uuid space in `[$1, $2)` (session filter `$3`), or with the ids `$4`
    /// when it is not null: the columns of ``UUIDSpaceItem`` (a row's created_at, a tombstone's
    /// deleted_at, as µs).
    func uuidItems(_ b: BookkeepingTables) -> String {
        let m = "m", t = table.quoted
        typealias C = UUIDSpaceItem.Column
        return """
            SELECT '\(UUIDSpaceItem.Kind.row.rawValue)' AS \(C.kind), \(column(m, \.messageID))::text AS \(C.id),
                   \(column(m, \.sessionID)) AS \(C.session), \(column(m, \.version)) AS \(C.version),
                   \(rowFingerprint(m)) AS \(C.fingerprint), encode(\(contentHash(m)), 'hex') AS \(C.contentHash),
                   \(Self.micros(column(m, \.createdAt))) AS \(C.at),
                   \(columns.replicatedAt.map { Self.micros("\(m).\(Self.identifier($0))") } ?? "NULL::bigint") AS \(C.replicatedAt)
            FROM \(t) m
            WHERE CASE WHEN $4::uuid[] IS NULL
                       THEN \(column(m, \.messageID)) >= $1::uuid AND ($2::uuid IS NULL OR \(column(m, \.messageID)) < $2::uuid)
                       ELSE \(column(m, \.messageID)) = ANY($4::uuid[]) END
              AND ($3::text IS NULL OR \(column(m, \.sessionID)) = $3::text)
            UNION ALL
            SELECT '\(UUIDSpaceItem.Kind.tombstone.rawValue)', t.message_id::text, t.session_id, t.version, 0, NULL,
                   \(Self.micros("t.deleted_at")), NULL
            FROM \(b.messageTombstones) t
            WHERE CASE WHEN $4::uuid[] IS NULL
                       THEN t.message_id >= $1::uuid AND ($2::uuid IS NULL OR t.message_id < $2::uuid)
                       ELSE t.message_id = ANY($4::uuid[]) END
              AND ($3::text IS NULL OR t.session_id = $3::text)
            """
    }

    /// Session tombstones with key in `[$1, $2)` (session filter `$3`), or with the ids `$4`:
    /// the columns of ``SessionTombstoneItem``.
    static func sessionItems(_ b: BookkeepingTables) -> String {
        """
        SELECT s.session_id AS \(SessionTombstoneItem.session), \(micros("s.deleted_at")) AS \(SessionTombstoneItem.deletedAt)
        FROM \(b.sessionTombstones) s
        WHERE CASE WHEN $4::text[] IS NULL THEN \(sessionKey) >= $1::bigint AND \(sessionKey) < $2::bigint
                   ELSE s.session_id = ANY($4::text[]) END
          AND ($3::text IS NULL OR s.session_id = $3::text)
        """
    }

    /// The full rows with the ids `$1` (for repair): the columns of ``FullRow`` (created_at as
    /// µs, attributes as `jsonb` text or NULL).
    var fullRows: String {
        let m = "m"
        typealias C = FullRow.Column
        return """
            SELECT \(column(m, \.messageID))::text AS \(C.id), \(column(m, \.sessionID)) AS \(C.session), \(column(m, \.role)) AS \(C.role),
                   \(column(m, \.content)) AS \(C.content), \(column(m, \.region)) AS \(C.region),
                   \(Self.micros(column(m, \.createdAt))) AS \(C.createdAt), \(column(m, \.version)) AS \(C.version),
                   (\(attributes(m)))::text AS \(C.attributes)
            FROM \(table.quoted) m WHERE \(column(m, \.messageID)) = ANY($1::uuid[])
            """
    }

    /// The repair's upsert: the rules of the apply path (a higher version wins; a message
    /// tombstone covers versions up to its own; a session tombstone covers rows created at or
    /// before it), plus the equal-version tie-break (the greater content hash wins; equal hashes:
    /// the greater fingerprint, so hand edits of other columns converge too), with no
    /// origin skipping: a repair is not an event from an origin. Returns the ids written, and
    /// whether each was inserted (not updated): ``RepairRowArrays/written`` and ``RepairRowArrays/inserted``.
    func repairUpsert(_ b: BookkeepingTables) -> String {
        let c = columns
        var names = [c.messageID, c.sessionID, c.role, c.content, c.region, c.createdAt, c.version].map(Self.identifier)
        var values = ["u.message_id", "u.session_id", "u.role", "u.content", "u.region", "u.created_at", "u.version"]
        if let a = c.attributes {
            names.append(Self.identifier(a))
            values.append("u.attributes::jsonb")
        }
        let id = Self.identifier(c.messageID), version = Self.identifier(c.version)
        var set = names.filter { $0 != id }.map { "\($0) = excluded.\($0)" }
        if let r = c.replicatedAt { set.append("\(Self.identifier(r)) = now()") }
        let t = table.quoted
        return """
            WITH u AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                           $6::timestamptz[], $7::bigint[], $8::text[])
                       AS u(message_id, session_id, role, content, region, created_at, version, attributes))
            INSERT INTO \(t) AS m (\(names.joined(separator: ", ")))
            SELECT \(values.joined(separator: ", ")) FROM u
            WHERE NOT EXISTS (SELECT 1 FROM \(b.messageTombstones) mt
                              WHERE mt.message_id = u.message_id AND mt.version >= u.version)
              AND NOT EXISTS (SELECT 1 FROM \(b.sessionTombstones) st
                              WHERE st.session_id = u.session_id AND st.deleted_at >= u.created_at)
            ON CONFLICT (\(id)) DO UPDATE
            SET \(set.joined(separator: ", "))
            WHERE \(column("m", \.version)) < excluded.\(version)
               OR (\(column("m", \.version)) = excluded.\(version) AND \(contentHash("m")) < \(contentHash("excluded")))
               OR (\(column("m", \.version)) = excluded.\(version) AND \(contentHash("m")) = \(contentHash("excluded"))
                   AND \(rowFingerprint("m")) < \(rowFingerprint("excluded")))
            RETURNING \(column("m", \.messageID))::text AS \(RepairRowArrays.written), (m.xmax = 0) AS \(RepairRowArrays.inserted)
            """
    }
}
