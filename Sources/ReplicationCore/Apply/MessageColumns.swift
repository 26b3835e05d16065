/// Which column of the messages table receives each event field (`apply.columns` and
/// `apply.attributes_column`).
///
/// Every name is a validated identifier (the rules of ``TableName``); SQL sees it only quoted.
public struct MessageColumns: Sendable, Hashable {
    public var messageID: String
    public var sessionID: String
    public var role: String
    public var content: String
    public var region: String
    public var createdAt: String
    public var version: String
    /// Set to `now()` whenever the daemon writes a row; `nil`: the table has no such column.
    public var replicatedAt: String?
    /// A `jsonb` column receiving the event's `attributes`; `nil`: attributes are not stored.
    public var attributes: String?

    /// The table `migrate` creates.
    public static let standard = MessageColumns(
        messageID: "message_id", sessionID: "session_id", role: "role", content: "content", region: "region",
        createdAt: "created_at", version: "version", replicatedAt: "replicated_at", attributes: nil)

    public init(messageID: String, sessionID: String, role: String, content: String, region: String,
                createdAt: String, version: String, replicatedAt: String?, attributes: String?) {
        self.messageID = messageID
        self.sessionID = sessionID
        self.role = role
        self.content = content
        self.region = region
        self.createdAt = createdAt
        self.version = version
        self.replicatedAt = replicatedAt
        self.attributes = attributes
    }

    /// The keys of `apply.columns`, in documentation order.
    public static let fieldKeys = ["message_id", "session_id", "role", "content", "region", "created_at",
                                   "version", "replicated_at"]

    /// Builds a mapping from `apply.columns` (event field → column; absent fields keep their
    /// standard column, `replicated_at: null`-like absence is expressed by `replicatedAt: nil`).
    /// - Throws: ``TableNameError`` for an invalid identifier, naming the field.
    public init(mapping: [String: String], replicatedAt: String??, attributes: String?) throws(TableNameError) {
        var c = MessageColumns.standard
        for (field, column) in mapping {
            try MessageColumns.validate(column)
            switch field {
            case "message_id": c.messageID = column
            case "session_id": c.sessionID = column
            case "role": c.role = column
            case "content": c.content = column
            case "region": c.region = column
            case "created_at": c.createdAt = column
            case "version": c.version = column
            case "replicated_at": c.replicatedAt = column
            default: throw TableNameError(text: field, problem: "not an event field (expected one of \(Self.fieldKeys.joined(separator: ", ")))")
            }
        }
        if let replicatedAt {
            if let r = replicatedAt { try MessageColumns.validate(r) }
            c.replicatedAt = replicatedAt
        }
        if let attributes { try MessageColumns.validate(attributes) }
        c.attributes = attributes
        let all = c.all.map(\.column)
        if let dup = all.first(where: { name in all.filter { $0 == name }.count > 1 }) {
            throw TableNameError(text: dup, problem: "the same column is mapped to two event fields")
        }
        self = c
    }

    public static func validate(_ column: String) throws(TableNameError) {
        if column.contains(".") { throw TableNameError(text: column, problem: "a column name cannot be qualified") }
        _ = try TableName(validating: column)
    }

    /// `"name"`.
    public static func quote(_ column: String) -> String { "\"\(column)\"" }

    /// Every mapped column with the event field it receives and the types it may have.
    public var all: [(field: String, column: String, expected: ColumnType)] {
        var out: [(String, String, ColumnType)] = [
            ("message_id", messageID, .uuid), ("session_id", sessionID, .text), ("role", role, .text),
            ("content", content, .text), ("region", region, .text), ("created_at", createdAt, .timestamptz),
            ("version", version, .bigint),
        ]
        if let replicatedAt { out.append(("replicated_at", replicatedAt, .timestamptz)) }
        if let attributes { out.append(("attributes", attributes, .jsonb)) }
        return out
    }

    /// The SQL types a mapped column may have.
    public enum ColumnType: String, Sendable {
        case uuid, text, timestamptz, bigint, jsonb

        /// The type `migrate` or a fix statement uses.
        public var ddl: String {
            switch self {
            case .uuid: "uuid"
            case .text: "text"
            case .timestamptz: "timestamptz"
            case .bigint: "bigint"
            case .jsonb: "jsonb"
            }
        }

        /// Whether a column of Postgres type `formatted` (`format_type` output) holds this type
        /// without loss.
        public func accepts(_ formatted: String) -> Bool {
            switch self {
            case .uuid: formatted == "uuid"
            case .text: formatted == "text" || formatted.hasPrefix("character varying")
            case .timestamptz: formatted == "timestamp with time zone"
            case .bigint: formatted == "bigint"
            case .jsonb: formatted == "jsonb"
            }
        }
    }
}

/// The one SQL expression that derives a seed-style event's message id in the database, and
/// its parts. The daemon derives the same id in Swift (``EventDecoder``, ``Timestamp/seedIDText``).
///
/// UUIDv5 (RFC 4122 §4.3) in the URL namespace of the UTF-8 bytes of
/// `session_id ⏎ region ⏎ created_at ⏎ role ⏎ content` (⏎ = one `\n`), where `created_at` is
/// written in UTC as `YYYY-MM-DDTHH:MM:SS.ffffff`. SHA-1 comes from `pgcrypto`'s `digest`.
public enum SeedID {
    /// `created_at` (a `timestamptz` expression) as the canonical text, independent of the
    /// session's `TimeZone` and `DateStyle`.
    public static func createdAtTextSQL(_ createdAt: String) -> String {
        "to_char((\(createdAt)) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
    }

    /// The uuid expression. `digestFunction` is the schema-qualified `digest` of `pgcrypto`.
    public static func sql(sessionID: String, region: String, createdAt: String, role: String, content: String,
                           digestFunction: String) -> String {
        let name = "convert_to(\(sessionID) || E'\\n' || \(region) || E'\\n' || \(createdAtTextSQL(createdAt)) "
            + "|| E'\\n' || \(role) || E'\\n' || \(content), 'UTF8')"
        let hash = "substring(\(digestFunction)('\\x6ba7b8119dad11d180b400c04fd430c8'::bytea || \(name), 'sha1') FROM 1 FOR 16)"
        return "(SELECT encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 80), 8, (get_byte(h, 8) & 63) | 128), 'hex')::uuid "
            + "FROM (SELECT \(hash) AS h) AS seed_id)"
    }
}

/// The tie-break between two versions of a message with the same `version`: the one with the
/// greater content hash wins, in every region, whatever the order they arrive in.
public enum ContentHash {
    /// The hash of one message version: SHA-256 of the content's UTF-8, a zero byte, and the
    /// attributes' `jsonb` text (empty when there are none). Computed only in SQL; a `verify`
    /// tool comparing regions must use this same expression.
    /// - Parameters:
    ///   - content: a `text` expression.
    ///   - attributes: a `jsonb` expression, or nil when the table stores no attributes.
    public static func sql(content: String, attributes: String?) -> String {
        let attrs = attributes.map { "coalesce((\($0))::text, '')" } ?? "''"
        return "sha256(convert_to(\(content), 'UTF8') || '\\x00'::bytea || convert_to(\(attrs), 'UTF8'))"
    }
}
