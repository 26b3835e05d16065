public import Foundation

/// One bind parameter of a statement: text format (what `psql` would type) or binary format
/// (Postgres's wire representation of a typed value, e.g. an array built by ``PostgresBinaryArray``).
public enum PostgresParameter: Sendable {
    case text(String)
    /// `oid`: the parameter's type (for binary parameters Postgres must know it up front).
    case binary([UInt8], oid: UInt32)
    case null
}

extension PostgresParameter: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .text(value) }
}

/// One statement with its parameters, for ``PostgresConnection/pipeline(_:)``.
public struct PostgresStatement: Sendable {
    public var sql: String
    public var parameters: [PostgresParameter]

    public init(_ sql: String, _ parameters: [PostgresParameter] = []) {
        self.sql = sql
        self.parameters = parameters
    }
}

/// Builders of one-dimensional arrays in Postgres's binary format (`array_recv`), for
/// `unnest($n::type[])` parameters: no quoting, no escaping, no parsing on the server.
///
/// Layout: ndim, has-null flag, element type oid, then per dimension (length, lower bound 1),
/// then per element a 4-byte length (-1 = NULL) and the element's own binary form.
public struct PostgresBinaryArray {
    /// Element and array type oids (`pg_type`).
    public enum ElementType: UInt32, Sendable {
        case bool = 16, bytea = 17, int8 = 20, int4 = 23, text = 25, timestamptz = 1184, uuid = 2950

        var arrayOID: UInt32 {
            switch self {
            case .bool: 1000
            case .bytea: 1001
            case .int8: 1016
            case .int4: 1007
            case .text: 1009
            case .timestamptz: 1185
            case .uuid: 2951
            }
        }
    }

    private var bytes: [UInt8] = []
    private let element: ElementType
    private var count: Int32 = 0
    private var hasNull = false

    /// Starts an array; `capacity` is a hint in bytes.
    public init(_ element: ElementType, reservingBytes capacity: Int = 0) {
        self.element = element
        bytes.reserveCapacity(20 + capacity)
        bytes.append(contentsOf: repeatElement(0, count: 20))  // header, filled in by `parameter`
    }

    private mutating func appendBE<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) }
    }

    /// Appends SQL NULL.
    public mutating func appendNull() {
        appendBE(Int32(-1))
        count += 1
        hasNull = true
    }

    /// Appends a `text` element (its UTF-8 bytes; Postgres checks the encoding).
    public mutating func append(text s: String) {
        var s = s
        s.withUTF8 { u in
            appendBE(Int32(u.count))
            bytes.append(contentsOf: u)
        }
        count += 1
    }

    /// Appends a `bytea` element.
    public mutating func append(bytes b: [UInt8]) {
        appendBE(Int32(b.count))
        bytes.append(contentsOf: b)
        count += 1
    }

    /// Appends a `bigint` element.
    public mutating func append(int8 v: Int64) {
        appendBE(Int32(8))
        appendBE(v)
        count += 1
    }

    /// Appends an `int` element.
    public mutating func append(int4 v: Int32) {
        appendBE(Int32(4))
        appendBE(v)
        count += 1
    }

    /// A `uuid` element (16 bytes, network order as in `UUID.uuid`).
    public mutating func append(uuid u: UUID) {
        appendBE(Int32(16))
        withUnsafeBytes(of: u.uuid) { bytes.append(contentsOf: $0) }
        count += 1
    }

    /// Microseconds since the Unix epoch (integer datetimes, the default since Postgres 10).
    public mutating func append(timestamptzMicroseconds us: Int64) {
        appendBE(Int32(8))
        appendBE(us &- Self.postgresEpochOffsetMicroseconds)
        count += 1
    }

    /// 2000-01-01T00:00:00Z − 1970-01-01T00:00:00Z in microseconds.
    static let postgresEpochOffsetMicroseconds: Int64 = 946_684_800_000_000

    /// The finished array as a binary parameter.
    public var parameter: PostgresParameter {
        var out = bytes
        func put(_ v: Int32, at i: Int) {
            withUnsafeBytes(of: v.bigEndian) { b in for k in 0..<4 { out[i + k] = b[k] } }
        }
        if count == 0 {
            // An empty array has no dimensions.
            out.removeSubrange(12..<20)
            put(0, at: 0)
            put(0, at: 4)
            put(Int32(bitPattern: element.rawValue), at: 8)
        } else {
            put(1, at: 0)
            put(hasNull ? 1 : 0, at: 4)
            put(Int32(bitPattern: element.rawValue), at: 8)
            put(count, at: 12)
            put(1, at: 16)
        }
        return .binary(out, oid: element.arrayOID)
    }
}
