// Decoding of pgoutput (protocol version 1) messages. Every read checks the bytes left first:
// a short, long or otherwise malformed message is a `PgOutputError`, never a trap.

extension PgOutputMessage {
    /// Decodes one pgoutput message (the payload of one XLogData frame).
    /// - Throws: ``PgOutputError`` for anything that is not exactly one well-formed message:
    ///   too short, an unknown message or tuple kind, a negative or oversized length, a name
    ///   without its terminating zero byte or not UTF-8, bytes left over at the end.
    public init(decoding bytes: [UInt8]) throws(PgOutputError) {
        var r = PgOutputReader(bytes)
        let kind = try r.byte("message type")
        switch kind {
        case UInt8(ascii: "B"):
            self = .begin(Begin(finalLSN: LSN(try r.uint64("final LSN")), commitTime: try r.int64("commit time"),
                                xid: try r.uint32("xid")))
        case UInt8(ascii: "C"):
            self = .commit(Commit(flags: try r.byte("flags"), commitLSN: LSN(try r.uint64("commit LSN")),
                                  endLSN: LSN(try r.uint64("end LSN")), commitTime: try r.int64("commit time")))
        case UInt8(ascii: "O"):
            self = .origin(Origin(originLSN: LSN(try r.uint64("origin LSN")), name: try r.string("origin name")))
        case UInt8(ascii: "R"):
            self = .relation(try r.relation())
        case UInt8(ascii: "Y"):
            self = .type(TypeInfo(oid: try r.uint32("type OID"), namespace: try r.string("namespace"), name: try r.string("type name")))
        case UInt8(ascii: "I"):
            let relation = try r.uint32("relation OID")
            try r.expect(UInt8(ascii: "N"), "new tuple marker N")
            self = .insert(relation: relation, new: try r.tuple())
        case UInt8(ascii: "U"):
            let relation = try r.uint32("relation OID")
            var old: OldTuple? = nil
            let marker = try r.byte("tuple marker")
            switch marker {
            case UInt8(ascii: "K"), UInt8(ascii: "O"):
                old = OldTuple(kind: marker == UInt8(ascii: "K") ? .key : .full, tuple: try r.tuple())
                try r.expect(UInt8(ascii: "N"), "new tuple marker N")
            case UInt8(ascii: "N"):
                break
            default:
                throw r.failure(at: r.offset - 1, "unknown tuple marker \(PgOutputReader.show(marker)) (expected K, O or N)")
            }
            self = .update(relation: relation, old: old, new: try r.tuple())
        case UInt8(ascii: "D"):
            let relation = try r.uint32("relation OID")
            let marker = try r.byte("tuple marker")
            guard marker == UInt8(ascii: "K") || marker == UInt8(ascii: "O") else {
                throw r.failure(at: r.offset - 1, "unknown tuple marker \(PgOutputReader.show(marker)) (expected K or O)")
            }
            self = .delete(relation: relation, old: OldTuple(kind: marker == UInt8(ascii: "K") ? .key : .full, tuple: try r.tuple()))
        case UInt8(ascii: "T"):
            let count = try r.int32("relation count")
            let options = try r.byte("options")
            guard count >= 0, Int(count) <= r.remaining / 4 else {
                throw r.failure(at: r.offset - 5, "relation count \(count) does not fit the \(r.remaining) bytes left")
            }
            var relations: [UInt32] = []
            relations.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { relations.append(try r.uint32("relation OID")) }
            self = .truncate(Truncate(cascade: options & 1 != 0, restartIdentity: options & 2 != 0, relations: relations))
        case UInt8(ascii: "M"):
            let flags = try r.byte("flags")
            let lsn = LSN(try r.uint64("message LSN"))
            let prefix = try r.string("prefix")
            let content = try r.lengthPrefixed("content")
            self = .message(LogicalMessage(transactional: flags & 1 != 0, lsn: lsn, prefix: prefix, content: content))
        default:
            throw r.failure(at: 0, "unknown message type \(PgOutputReader.show(kind))")
        }
        if r.remaining > 0 { throw r.failure(at: r.offset, "\(r.remaining) bytes left after the message") }
    }
}

/// A bounds-checked big-endian reader over one message.
struct PgOutputReader {
    private let bytes: [UInt8]
    private(set) var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    func failure(at offset: Int, _ problem: String) -> PgOutputError { PgOutputError(offset: offset, problem: problem) }

    static func show(_ b: UInt8) -> String {
        (32...126).contains(b) ? "'\(Character(Unicode.Scalar(b)))'" : "0x" + String(b, radix: 16)
    }

    private mutating func take(_ n: Int, _ what: String) throws(PgOutputError) -> Range<Int> {
        guard n >= 0, n <= remaining else {
            throw failure(at: offset, "\(what): needs \(n) bytes, \(remaining) left")
        }
        let range = offset..<(offset + n)
        offset += n
        return range
    }

    mutating func byte(_ what: String) throws(PgOutputError) -> UInt8 {
        bytes[try take(1, what).lowerBound]
    }

    mutating func expect(_ b: UInt8, _ what: String) throws(PgOutputError) {
        let got = try byte(what)
        guard got == b else { throw failure(at: offset - 1, "expected \(what), got \(Self.show(got))") }
    }

    private mutating func bigEndian<T: FixedWidthInteger & UnsignedInteger>(_: T.Type, _ what: String) throws(PgOutputError) -> T {
        var v: T = 0
        for i in try take(MemoryLayout<T>.size, what) { v = v << 8 | T(bytes[i]) }
        return v
    }

    mutating func uint64(_ what: String) throws(PgOutputError) -> UInt64 { try bigEndian(UInt64.self, what) }
    mutating func int64(_ what: String) throws(PgOutputError) -> Int64 { Int64(bitPattern: try bigEndian(UInt64.self, what)) }
    mutating func uint32(_ what: String) throws(PgOutputError) -> UInt32 { try bigEndian(UInt32.self, what) }
    mutating func int32(_ what: String) throws(PgOutputError) -> Int32 { Int32(bitPattern: try bigEndian(UInt32.self, what)) }
    mutating func int16(_ what: String) throws(PgOutputError) -> Int16 { Int16(bitPattern: try bigEndian(UInt16.self, what)) }

    /// A zero-terminated UTF-8 string.
    mutating func string(_ what: String) throws(PgOutputError) -> String {
        guard let end = bytes[offset...].firstIndex(of: 0) else {
            throw failure(at: offset, "\(what): no terminating zero byte")
        }
        let start = offset
        offset = end + 1
        guard let s = String(validating: bytes[start..<end], as: UTF8.self) else {
            throw failure(at: start, "\(what): not UTF-8")
        }
        return s
    }

    /// An Int32 length, then that many bytes.
    mutating func lengthPrefixed(_ what: String) throws(PgOutputError) -> [UInt8] {
        let at = offset
        let n = try int32("\(what) length")
        guard n >= 0 else { throw failure(at: at, "\(what): negative length \(n)") }
        return Array(bytes[try take(Int(n), what)])
    }

    mutating func tuple() throws(PgOutputError) -> PgOutputMessage.Tuple {
        let at = offset
        let count = try int16("column count")
        // Each column takes at least its kind byte.
        guard count >= 0, Int(count) <= remaining else {
            throw failure(at: at, "column count \(count) does not fit the \(remaining) bytes left")
        }
        var values: [PgOutputMessage.Value] = []
        values.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let kind = try byte("kind of column \(i + 1)")
            switch kind {
            case UInt8(ascii: "n"): values.append(.null)
            case UInt8(ascii: "u"): values.append(.unchangedToast)
            case UInt8(ascii: "t"): values.append(.text(try lengthPrefixed("column \(i + 1)")))
            case UInt8(ascii: "b"): values.append(.binary(try lengthPrefixed("column \(i + 1)")))
            default:
                throw failure(at: offset - 1, "column \(i + 1): unknown kind \(Self.show(kind)) (expected n, u, t or b)")
            }
        }
        return PgOutputMessage.Tuple(values: values)
    }

    mutating func relation() throws(PgOutputError) -> PgOutputMessage.Relation {
        let oid = try uint32("relation OID")
        let namespace = try string("namespace")
        let name = try string("relation name")
        let identityAt = offset
        let identityByte = try byte("replica identity")
        guard let identity = PgOutputMessage.ReplicaIdentity(rawValue: identityByte) else {
            throw failure(at: identityAt, "unknown replica identity \(Self.show(identityByte)) (expected d, n, f or i)")
        }
        let countAt = offset
        let count = try int16("column count")
        // Each column takes at least 10 bytes (flags, an empty name's zero, type OID, modifier).
        guard count >= 0, Int(count) <= remaining / 10 else {
            throw failure(at: countAt, "column count \(count) does not fit the \(remaining) bytes left")
        }
        var columns: [PgOutputMessage.Relation.Column] = []
        columns.reserveCapacity(Int(count))
        for i in 0..<Int(count) {
            let flags = try byte("flags of column \(i + 1)")
            let columnName = try string("name of column \(i + 1)")
            columns.append(.init(isKey: flags & 1 != 0, name: columnName, typeOID: try uint32("type of column \(i + 1)"),
                                 typeModifier: try int32("type modifier of column \(i + 1)")))
        }
        return PgOutputMessage.Relation(oid: oid, namespace: namespace, name: name, replicaIdentity: identity, columns: columns)
    }
}
