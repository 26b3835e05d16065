public import Foundation

/// A point in time with exact microsecond precision (Postgres `timestamptz` precision).
///
/// Stored as microseconds since the Unix epoch, UTC. Never goes through `Double`, so a value
/// written by the producer as `…T10:00:00.123456Z` reaches every region unchanged.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Microseconds since 1970-01-01T00:00:00Z.
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool { lhs.microseconds < rhs.microseconds }

    /// Seconds since the Unix epoch (for metrics; loses sub-microsecond nothing, but is a Double).
    public var secondsSinceEpoch: Double { Double(microseconds) / 1_000_000 }

    public var description: String { postgresText }
}

/// The role of a chat message (docs/events.md).
public enum MessageRole: String, Sendable, Hashable, CaseIterable {
    case system, user, assistant, tool
}

/// A decoded, validated replication event (the format is in docs/events.md).
public enum Event: Sendable, Hashable {
    case messageUpserted(MessageUpsert)
    case messageDeleted(MessageDeletion)
    case sessionDeleted(SessionDeletion)

    /// The session the event belongs to.
    public var sessionID: String {
        switch self {
        case .messageUpserted(let u): u.sessionID
        case .messageDeleted(let d): d.sessionID
        case .sessionDeleted(let s): s.sessionID
        }
    }

    /// The region whose application produced the event.
    public var originRegion: String {
        switch self {
        case .messageUpserted(let u): u.originRegion
        case .messageDeleted(let d): d.originRegion
        case .sessionDeleted(let s): s.originRegion
        }
    }
}

/// `message.upserted` (also what a seed-style event decodes to).
public struct MessageUpsert: Sendable, Hashable {
    public var messageID: UUID
    public var sessionID: String
    public var role: MessageRole
    public var content: String
    public var originRegion: String
    public var createdAt: Timestamp
    public var version: Int64
    /// The event's optional `attributes`: the JSON object's text exactly as received. Part of
    /// the message version, like `content`.
    public var attributes: String?

    public init(messageID: UUID, sessionID: String, role: MessageRole, content: String,
                originRegion: String, createdAt: Timestamp, version: Int64, attributes: String? = nil) {
        self.messageID = messageID
        self.sessionID = sessionID
        self.role = role
        self.content = content
        self.originRegion = originRegion
        self.createdAt = createdAt
        self.version = version
        self.attributes = attributes
    }
}

/// `message.deleted`: a tombstone for one message at a version.
public struct MessageDeletion: Sendable, Hashable {
    public var messageID: UUID
    public var sessionID: String
    public var originRegion: String
    public var occurredAt: Timestamp
    public var version: Int64

    public init(messageID: UUID, sessionID: String, originRegion: String, occurredAt: Timestamp, version: Int64) {
        self.messageID = messageID
        self.sessionID = sessionID
        self.originRegion = originRegion
        self.occurredAt = occurredAt
        self.version = version
    }
}

/// `session.deleted`: erase every message of the session created at or before `occurredAt`.
public struct SessionDeletion: Sendable, Hashable {
    public var sessionID: String
    public var originRegion: String
    public var occurredAt: Timestamp

    public init(sessionID: String, originRegion: String, occurredAt: Timestamp) {
        self.sessionID = sessionID
        self.originRegion = originRegion
        self.occurredAt = occurredAt
    }
}

/// Why a record can never be applied (it becomes a dead letter, see docs/events.md).
public struct DecodeError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A short machine-friendly reason, e.g. `invalid_json`, `missing_field`, `wrong_type`.
    public var reason: String
    /// A precise human-readable explanation naming the offending field.
    public var message: String

    public init(reason: String, message: String) {
        self.reason = reason
        self.message = message
    }

    public var description: String { "\(reason): \(message)" }
}
