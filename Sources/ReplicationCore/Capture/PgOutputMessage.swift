/// One message of Postgres's built-in logical decoding output plugin `pgoutput`, protocol
/// version 1 (the payload of an XLogData frame of the streaming replication protocol).
///
/// The layouts are those of the Postgres documentation, "Logical Replication Message
/// Formats". Decode with ``PgOutputMessage/init(decoding:)``: the bytes come from a database
/// and are read as hostile input (a malformed message is a ``PgOutputError``, never a trap).
public enum PgOutputMessage: Sendable, Hashable {
    case begin(Begin)
    case commit(Commit)
    /// The transaction being sent was written by a session with a replication origin set up
    /// (between `begin` and the first change). Ordinary transactions carry none.
    case origin(Origin)
    case relation(Relation)
    case type(TypeInfo)
    case insert(relation: UInt32, new: Tuple)
    /// `old` is the replica identity of the row before the update: the key columns (`.key`,
    /// only when they changed), the whole row (`.full`, with `REPLICA IDENTITY FULL`), or nil.
    case update(relation: UInt32, old: OldTuple?, new: Tuple)
    case delete(relation: UInt32, old: OldTuple)
    case truncate(Truncate)
    /// A message written with `pg_logical_emit_message` (sent only with the `messages` option).
    case message(LogicalMessage)

    public struct Begin: Sendable, Hashable {
        /// The LSN of the transaction's commit record.
        public var finalLSN: LSN
        /// Microseconds since 2000-01-01 00:00:00 UTC (Postgres's epoch).
        public var commitTime: Int64
        public var xid: UInt32
    }

    public struct Commit: Sendable, Hashable {
        public var flags: UInt8
        /// The LSN of the commit record.
        public var commitLSN: LSN
        /// The end of the commit record: confirming this position as flushed means the
        /// transaction is never sent again.
        public var endLSN: LSN
        public var commitTime: Int64
    }

    public struct Origin: Sendable, Hashable {
        /// The commit LSN on the origin server (0 when the writing session set none).
        public var originLSN: LSN
        public var name: String
    }

    /// `REPLICA IDENTITY` of a table: what an UPDATE or DELETE logs of the old row.
    public enum ReplicaIdentity: UInt8, Sendable, Hashable {
        /// The primary key's columns (`d`).
        case `default` = 100
        /// Nothing (`n`).
        case nothing = 110
        /// The whole row (`f`).
        case full = 102
        /// The columns of a chosen unique index (`i`).
        case index = 105
    }

    public struct Relation: Sendable, Hashable {
        public var oid: UInt32
        /// The schema; empty means `pg_catalog`.
        public var namespace: String
        public var name: String
        public var replicaIdentity: ReplicaIdentity
        public var columns: [Column]

        public struct Column: Sendable, Hashable {
            /// Part of the replica identity (the key).
            public var isKey: Bool
            public var name: String
            public var typeOID: UInt32
            public var typeModifier: Int32
        }
    }

    public struct TypeInfo: Sendable, Hashable {
        public var oid: UInt32
        public var namespace: String
        public var name: String
    }

    public struct Truncate: Sendable, Hashable {
        public var cascade: Bool
        public var restartIdentity: Bool
        public var relations: [UInt32]
    }

    public struct LogicalMessage: Sendable, Hashable {
        public var transactional: Bool
        public var lsn: LSN
        public var prefix: String
        public var content: [UInt8]
    }

    /// The columns of one row, in the relation's column order.
    public struct Tuple: Sendable, Hashable {
        public var values: [Value]
    }

    /// The old row of an UPDATE or DELETE.
    public struct OldTuple: Sendable, Hashable {
        /// `K`: only the replica identity's key columns are meaningful (the others are null).
        /// `O`: the whole row (`REPLICA IDENTITY FULL`).
        public enum Kind: Sendable, Hashable { case key, full }
        public var kind: Kind
        public var tuple: Tuple
    }

    /// One column's value.
    public enum Value: Sendable, Hashable {
        case null
        /// An unchanged TOASTed value: the column keeps its value, but the value is **not in the
        /// message** (it is neither NULL nor empty).
        case unchangedToast
        /// The value in the type's text output format.
        case text([UInt8])
        /// The value in the type's binary format (only with the `binary` option).
        case binary([UInt8])
    }
}

/// Why bytes are not a pgoutput message. Carries the offset where reading failed.
public struct PgOutputError: Error, Sendable, Hashable, CustomStringConvertible {
    public var offset: Int
    public var problem: String

    public init(offset: Int, problem: String) {
        self.offset = offset
        self.problem = problem
    }

    public var description: String { "malformed pgoutput message at byte \(offset): \(problem)" }
}

extension PgOutputMessage.Begin {
    /// The commit time as a ``Timestamp``; nil when it does not fit (a hostile value).
    public var commitTimestamp: Timestamp? { PgOutputMessage.timestamp(postgresMicros: commitTime) }
}

extension PgOutputMessage {
    /// Microseconds since 2000-01-01 UTC → ``Timestamp`` (Unix epoch), nil on overflow.
    static func timestamp(postgresMicros: Int64) -> Timestamp? {
        let (sum, overflow) = postgresMicros.addingReportingOverflow(946_684_800_000_000)
        return overflow ? nil : Timestamp(microseconds: sum)
    }
}
