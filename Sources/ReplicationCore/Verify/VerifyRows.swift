import Foundation
import PostgresClient

// The rows of the verifier's statements (``VerifySchema``), read by column name: each type names
// the columns its statement returns (the SQL uses these names), so no code depends on the
// position of a column. A reply is input like any other: a row without what it needs is skipped.

/// One row of ``VerifySchema/uuidSegmentDigests`` or ``VerifySchema/sessionSegmentDigests``.
struct SegmentDigestRow {
    static let segment = "segment", items = "items", xor = "xor"

    var segment: Int64
    var digest: SegmentDigest

    init?(_ row: PostgresRow) {
        guard let s = row.integer(Self.segment, as: Int64.self), let n = row.integer(Self.items, as: Int64.self) else { return nil }
        segment = s
        digest = SegmentDigest(count: n, xor: row.integer(Self.xor, as: Int64.self) ?? 0)
    }
}

/// One item of the uuid space (``VerifySchema/uuidItems``): a message row or a message tombstone.
enum UUIDSpaceItem {
    case row(messageID: String, RowState)
    case tombstone(messageID: String, TombstoneState)

    /// The `kind` column.
    enum Kind: String { case row = "m", tombstone = "t" }

    enum Column {
        static let kind = "kind", id = "message_id", session = "session_id", version = "version", fingerprint = "fingerprint"
        static let contentHash = "content_hash", at = "at_us", replicatedAt = "replicated_at_us"
    }

    init?(_ row: PostgresRow) {
        guard let kind = row[Column.kind].flatMap(Kind.init(rawValue:)), let id = row[Column.id], let session = row[Column.session],
              let version = row.integer(Column.version, as: Int64.self) else { return nil }
        let at = row.integer(Column.at, as: Int64.self) ?? 0
        switch kind {
        case .row:
            self = .row(messageID: id, RowState(
                version: version, contentHash: row[Column.contentHash] ?? "",
                fingerprint: row.integer(Column.fingerprint, as: Int64.self) ?? 0, sessionID: session, createdAt: at,
                replicatedAt: row.integer(Column.replicatedAt, as: Int64.self) ?? 0))
        case .tombstone:
            self = .tombstone(messageID: id, TombstoneState(version: version, sessionID: session, deletedAt: at))
        }
    }
}

/// One session tombstone (``VerifySchema/sessionItems``).
struct SessionTombstoneItem {
    static let session = "session_id", deletedAt = "deleted_at_us"

    var sessionID: String
    /// µs since the epoch.
    var deletedAt: Int64

    init?(_ row: PostgresRow) {
        guard let s = row[Self.session], let at = row.integer(Self.deletedAt, as: Int64.self) else { return nil }
        sessionID = s
        deletedAt = at
    }
}

/// A whole row of the messages table, as a repair copies it (``VerifySchema/fullRows``).
struct FullRow: Sendable {
    enum Column {
        static let id = "message_id", session = "session_id", role = "role", content = "content", region = "region"
        static let createdAt = "created_at_us", version = "version", attributes = "attributes"
    }

    var messageID: String
    var uuid: UUID
    var sessionID: String
    var role: String
    var content: String
    var region: String
    /// µs since the epoch.
    var createdAt: Int64
    var version: Int64
    /// `jsonb` as text, or nil.
    var attributes: String?

    init?(_ row: PostgresRow) {
        guard let id = row[Column.id], let uuid = UUID(uuidString: id), let created = row.integer(Column.createdAt, as: Int64.self),
              let version = row.integer(Column.version, as: Int64.self) else { return nil }
        messageID = id
        self.uuid = uuid
        sessionID = row[Column.session] ?? ""
        role = row[Column.role] ?? ""
        content = row[Column.content] ?? ""
        region = row[Column.region] ?? ""
        createdAt = created
        self.version = version
        attributes = row[Column.attributes]
    }
}

/// The parameters of ``VerifySchema/repairUpsert``: one binary array per column, in the order of
/// its `unnest`.
struct RepairRowArrays {
    /// The columns the upsert returns.
    static let written = "message_id", inserted = "inserted"

    private var ids = PostgresBinaryArray(.uuid)
    private var sessions = PostgresBinaryArray(.text)
    private var roles = PostgresBinaryArray(.text)
    private var contents = PostgresBinaryArray(.text)
    private var regions = PostgresBinaryArray(.text)
    private var createdAt = PostgresBinaryArray(.timestamptz)
    private var versions = PostgresBinaryArray(.int8)
    private var attributes = PostgresBinaryArray(.text)
    private(set) var count = 0

    init() {}

    mutating func append(_ r: FullRow) {
        ids.append(uuid: r.uuid)
        sessions.append(text: r.sessionID)
        roles.append(text: r.role)
        contents.append(text: r.content)
        regions.append(text: r.region)
        createdAt.append(timestamptzMicroseconds: r.createdAt)
        versions.append(int8: r.version)
        if let a = r.attributes { attributes.append(text: a) } else { attributes.appendNull() }
        count += 1
    }

    /// `$1` … `$8` of the upsert.
    var parameters: [PostgresParameter] {
        [ids, sessions, roles, contents, regions, createdAt, versions, attributes].map(\.parameter)
    }
}
