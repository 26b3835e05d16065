import Foundation
import Testing
@testable import ReplicationCore

/// Encodes pgoutput messages by hand, as the server lays them out (big-endian integers,
/// zero-terminated strings), for the decoder's tests.
struct PgOutputBytes {
    var bytes: [UInt8] = []

    init(_ kind: Character) { bytes = [kind.asciiValue!] }

    func u8(_ v: UInt8) -> Self { var c = self; c.bytes.append(v); return c }
    func ch(_ c: Character) -> Self { u8(c.asciiValue!) }
    func i16(_ v: Int16) -> Self { int(UInt16(bitPattern: v)) }
    func i32(_ v: Int32) -> Self { int(UInt32(bitPattern: v)) }
    func u32(_ v: UInt32) -> Self { int(v) }
    func u64(_ v: UInt64) -> Self { int(v) }
    func i64(_ v: Int64) -> Self { int(UInt64(bitPattern: v)) }
    func str(_ s: String) -> Self { var c = self; c.bytes += Array(s.utf8) + [0]; return c }
    func raw(_ b: [UInt8]) -> Self { var c = self; c.bytes += b; return c }

    private func int<T: FixedWidthInteger>(_ v: T) -> Self {
        var c = self
        for i in (0..<MemoryLayout<T>.size).reversed() { c.bytes.append(UInt8(truncatingIfNeeded: v >> (i * 8))) }
        return c
    }

    /// TupleData: the column count, then each value (n, u, t + length + bytes, b + length + bytes).
    func tuple(_ values: [PgOutputMessage.Value]) -> Self {
        var c = i16(Int16(values.count))
        for v in values {
            switch v {
            case .null: c = c.ch("n")
            case .unchangedToast: c = c.ch("u")
            case .text(let b): c = c.ch("t").i32(Int32(b.count)).raw(b)
            case .binary(let b): c = c.ch("b").i32(Int32(b.count)).raw(b)
            }
        }
        return c
    }
}

@Suite("PgOutputDecoder")
struct PgOutputDecoderTests {
    typealias M = PgOutputMessage

    static func text(_ s: String) -> M.Value { .text(Array(s.utf8)) }

    /// Every kind of message, hand-built, with what it must decode to.
    static let handBuilt: [(name: String, bytes: [UInt8], expected: M)] = [
        ("begin", PgOutputBytes("B").u64(0x1_0000_0010).i64(123_456).u32(732).bytes,
         .begin(.init(finalLSN: LSN(0x1_0000_0010), commitTime: 123_456, xid: 732))),
        ("commit", PgOutputBytes("C").u8(0).u64(0x10).u64(0x40).i64(-5).bytes,
         .commit(.init(flags: 0, commitLSN: LSN(0x10), endLSN: LSN(0x40), commitTime: -5))),
        ("origin", PgOutputBytes("O").u64(0).str("region_replicator_apply_1").bytes,
         .origin(.init(originLSN: .zero, name: "region_replicator_apply_1"))),
        ("relation", PgOutputBytes("R").u32(16384).str("public").str("messages").ch("f").i16(2)
            .u8(1).str("message_id").u32(2950).i32(-1).u8(0).str("content").u32(25).i32(-1).bytes,
         .relation(.init(oid: 16384, namespace: "public", name: "messages", replicaIdentity: .full, columns: [
            .init(isKey: true, name: "message_id", typeOID: 2950, typeModifier: -1),
            .init(isKey: false, name: "content", typeOID: 25, typeModifier: -1)]))),
        ("relation without columns", PgOutputBytes("R").u32(1).str("").str("t").ch("n").i16(0).bytes,
         .relation(.init(oid: 1, namespace: "", name: "t", replicaIdentity: .nothing, columns: []))),
        ("type", PgOutputBytes("Y").u32(16401).str("public").str("mood").bytes,
         .type(.init(oid: 16401, namespace: "public", name: "mood"))),
        ("insert", PgOutputBytes("I").u32(16384).ch("N").tuple([text("a"), .null, .text([]), .binary([1, 2])]).bytes,
         .insert(relation: 16384, new: .init(values: [text("a"), .null, .text([]), .binary([1, 2])]))),
        ("update without old", PgOutputBytes("U").u32(7).ch("N").tuple([text("x"), .unchangedToast]).bytes,
         .update(relation: 7, old: nil, new: .init(values: [text("x"), .unchangedToast]))),
        ("update with key", PgOutputBytes("U").u32(7).ch("K").tuple([text("k"), .null]).ch("N").tuple([text("k2"), text("v")]).bytes,
         .update(relation: 7, old: .init(kind: .key, tuple: .init(values: [text("k"), .null])),
                 new: .init(values: [text("k2"), text("v")]))),
        ("update with old row", PgOutputBytes("U").u32(7).ch("O").tuple([text("k"), text("old")]).ch("N").tuple([text("k"), .unchangedToast]).bytes,
         .update(relation: 7, old: .init(kind: .full, tuple: .init(values: [text("k"), text("old")])),
                 new: .init(values: [text("k"), .unchangedToast]))),
        ("delete by key", PgOutputBytes("D").u32(9).ch("K").tuple([text("k")]).bytes,
         .delete(relation: 9, old: .init(kind: .key, tuple: .init(values: [text("k")])))),
        ("delete with old row", PgOutputBytes("D").u32(9).ch("O").tuple([text("k"), text("v")]).bytes,
         .delete(relation: 9, old: .init(kind: .full, tuple: .init(values: [text("k"), text("v")])))),
        ("truncate", PgOutputBytes("T").i32(2).u8(3).u32(5).u32(6).bytes,
         .truncate(.init(cascade: true, restartIdentity: true, relations: [5, 6]))),
        ("message", PgOutputBytes("M").u8(1).u64(0x99).str("rr").i32(5).raw(Array("hello".utf8)).bytes,
         .message(.init(transactional: true, lsn: LSN(0x99), prefix: "rr", content: Array("hello".utf8)))),
    ]

    @Test("every message kind decodes to what was encoded")
    func handBuiltMessages() throws {
        for (name, bytes, expected) in Self.handBuilt {
            #expect(try M(decoding: bytes) == expected, "\(name)")
        }
    }

    @Test("an unchanged TOAST column is neither NULL nor empty")
    func unchangedToastIsItsOwnValue() throws {
        let m = try M(decoding: PgOutputBytes("U").u32(7).ch("N").tuple([.unchangedToast, .null, .text([])]).bytes)
        guard case .update(_, _, let new) = m else { Issue.record("not an update: \(m)"); return }
        #expect(new.values == [.unchangedToast, .null, .text([])])
        #expect(new.values[0] != .null && new.values[0] != .text([]))
    }

    @Test("every truncation of every message is an error, and so is a byte too many")
    func truncatedAndOverlong() {
        for (name, bytes, _) in Self.handBuilt {
            for n in 0..<bytes.count {
                #expect(throws: PgOutputError.self, "\(name) cut to \(n) bytes") { try M(decoding: Array(bytes.prefix(n))) }
            }
            #expect(throws: PgOutputError.self, "\(name) plus one byte") { try M(decoding: bytes + [0]) }
        }
    }

    @Test("malformed messages are errors that say what is wrong")
    func malformed() {
        let cases: [(String, [UInt8], String)] = [
            ("unknown type", [UInt8(ascii: "Z"), 0, 0], "unknown message type 'Z'"),
            ("stream start (protocol 2) is not accepted", PgOutputBytes("S").u32(1).u8(1).bytes, "unknown message type 'S'"),
            ("negative column length", PgOutputBytes("I").u32(1).ch("N").i16(1).ch("t").i32(-1).bytes, "negative length -1"),
            ("column length past the end", PgOutputBytes("I").u32(1).ch("N").i16(1).ch("t").i32(1_000_000).raw([1, 2]).bytes,
             "needs 1000000 bytes, 2 left"),
            ("Int32.max length", PgOutputBytes("I").u32(1).ch("N").i16(1).ch("t").i32(.max).bytes, "needs 2147483647 bytes"),
            ("negative column count", PgOutputBytes("I").u32(1).ch("N").i16(-3).bytes, "column count -3"),
            ("column count beyond the bytes", PgOutputBytes("I").u32(1).ch("N").i16(30000).ch("n").bytes, "column count 30000"),
            ("unknown column kind", PgOutputBytes("I").u32(1).ch("N").i16(1).ch("x").bytes, "unknown kind 'x'"),
            ("insert without N", PgOutputBytes("I").u32(1).ch("K").i16(0).bytes, "expected new tuple marker N"),
            ("update with an unknown marker", PgOutputBytes("U").u32(1).ch("Q").i16(0).bytes, "unknown tuple marker 'Q'"),
            ("delete with N", PgOutputBytes("D").u32(1).ch("N").i16(0).bytes, "unknown tuple marker 'N'"),
            ("unknown replica identity", PgOutputBytes("R").u32(1).str("s").str("t").ch("z").i16(0).bytes, "unknown replica identity 'z'"),
            ("relation column count beyond the bytes", PgOutputBytes("R").u32(1).str("s").str("t").ch("d").i16(5).bytes, "column count 5"),
            ("name without its zero", PgOutputBytes("O").u64(0).raw(Array("abc".utf8)).bytes, "no terminating zero byte"),
            ("name not UTF-8", PgOutputBytes("O").u64(0).raw([0xFF, 0xFE, 0]).bytes, "not UTF-8"),
            ("truncate count beyond the bytes", PgOutputBytes("T").i32(1_000_000).u8(0).u32(1).bytes, "relation count 1000000"),
            ("negative truncate count", PgOutputBytes("T").i32(-1).u8(0).bytes, "relation count -1"),
            ("negative message length", PgOutputBytes("M").u8(0).u64(0).str("p").i32(-7).bytes, "negative length -7"),
            ("empty", [], "needs 1 bytes, 0 left"),
        ]
        for (name, bytes, expected) in cases {
            do {
                let m = try M(decoding: bytes)
                Issue.record("\(name): decoded to \(m)")
            } catch {
                #expect(error.description.contains(expected), "\(name): \(error)")
            }
        }
    }

    @Test("random corruptions of valid messages never trap")
    func mutationsNeverTrap() {
        var rng = SplitMix(seed: 20261206)
        var decoded = 0, refused = 0
        for (_, bytes, _) in Self.handBuilt {
            for _ in 0..<3000 {
                var b = bytes
                for _ in 0...(rng.next() % 4) {
                    let op = rng.next() % 4
                    let i = b.isEmpty ? 0 : Int(rng.next() % UInt64(b.count))
                    switch op {
                    case 0 where !b.isEmpty: b[i] = UInt8(truncatingIfNeeded: rng.next())
                    case 1: b.insert(UInt8(truncatingIfNeeded: rng.next()), at: min(i, b.count))
                    case 2 where !b.isEmpty: b.remove(at: i)
                    default: if !b.isEmpty { b[i] = [0, 0xFF, 0x7F, 0x80][Int(rng.next() % 4)] }
                    }
                }
                if (try? M(decoding: b)) != nil { decoded += 1 } else { refused += 1 }
            }
        }
        #expect(decoded > 0 && refused > 0, "decoded \(decoded), refused \(refused)")
    }

    // MARK: - Bytes from a real PostgreSQL 15

    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fixtures/pgoutput")

    /// `pg15.messages`: (lsn, xid, bytes) per message.
    static func captured() throws -> [(lsn: LSN, xid: String, bytes: [UInt8])] {
        let text = try String(contentsOf: fixtures.appendingPathComponent("pg15.messages"), encoding: .utf8)
        return try text.split(separator: "\n").map { line in
            let f = line.split(separator: "|")
            guard f.count == 3, let lsn = LSN(text: f[0]), f[2].utf8.count % 2 == 0 else { throw FixtureError(line: String(line)) }
            return (lsn, String(f[1]), Hex.decode(String(f[2])))
        }
    }

    struct FixtureError: Error { let line: String }

    @Test("pg_recvlogical's output is the captured messages, each followed by a newline")
    func recvlogicalMatchesTheMessages() throws {
        let stream = try [UInt8](Data(contentsOf: Self.fixtures.appendingPathComponent("pg15.recvlogical")))
        let joined: [UInt8] = try Self.captured().reduce(into: []) { $0 += $1.bytes + [0x0A] }
        #expect(stream.count == joined.count && stream == joined)
    }

    @Test("every message a real PostgreSQL 15 sent decodes, with the expected meaning")
    func realPostgres15() throws {
        let captured = try Self.captured()
        let messages = try captured.map { try M(decoding: $0.bytes) }
        #expect(messages.count == 45)
        // Begin and Commit pair up; the commit's end LSN is where the slot resumes after it.
        var open: M.Begin? = nil
        var relations: [UInt32: M.Relation] = [:]
        var origins: [String] = []
        for (m, c) in zip(messages, captured) {
            switch m {
            case .begin(let b):
                #expect(open == nil)
                open = b
                #expect(b.commitTimestamp.map { $0.rfc3339.hasPrefix("2026-12-06T") } == true, "\(b)")
            case .commit(let commit):
                #expect(commit.commitLSN == open?.finalLSN && commit.endLSN == c.lsn && commit.commitTime == open?.commitTime)
                open = nil
            case .relation(let r): relations[r.oid] = r
            case .origin(let o): origins.append(o.name)
            default: #expect(open != nil, "\(m) outside a transaction")
            }
        }
        #expect(origins == ["region_replicator_apply_1"])
        let messagesTable = try #require(relations.values.first { $0.name == "messages" })
        #expect(messagesTable.namespace == "public" && messagesTable.replicaIdentity == .full)
        #expect(messagesTable.columns.map(\.name) == ["message_id", "session_id", "role", "content", "region", "created_at",
                                                      "version", "replicated_at"])
        #expect(messagesTable.columns.map(\.typeOID) == [2950, 25, 25, 25, 25, 1184, 20, 1184])
        #expect(relations.values.first { $0.name == "keyonly" }?.replicaIdentity == .default)

        // The first INSERT: every column as text, in the server's output format.
        guard case .insert(messagesTable.oid, let first) = messages[2] else { Issue.record("\(messages[2])"); return }
        #expect(first.values == ["5f7e9c52-1b2c-4d3e-8f40-123456789abc", "sess-42", "user", "Bonjour \"monde\" \\ é", "us-east-1",
                                 "2026-11-24 10:00:00.123456+00", "1", "2026-11-24 10:00:01+00"].map(Self.text))
        // UPDATE and DELETE of a REPLICA IDENTITY FULL table carry the whole old row.
        guard case .update(_, let old?, let new) = messages[5] else { Issue.record("\(messages[5])"); return }
        #expect(old.kind == .full && old.tuple.values[3] == Self.text("Bonjour \"monde\" \\ é") && old.tuple.values[6] == Self.text("1"))
        #expect(new.values[3] == Self.text("edited") && new.values[6] == Self.text("2"))
        guard case .delete(_, let deleted) = messages[8] else { Issue.record("\(messages[8])"); return }
        #expect(deleted.kind == .full && deleted.tuple.values[6] == Self.text("2"))

        // The out-of-line content left unchanged: `u` in the new row, the value only in the old one.
        let toast = messages.compactMap { m -> (M.OldTuple?, M.Tuple)? in
            if case .update(_, let old, let new) = m, new.values.contains(.unchangedToast) { return (old, new) }
            return nil
        }
        #expect(toast.count == 1)
        if let (old, new) = toast.first {
            #expect(new.values[3] == .unchangedToast && new.values[6] == Self.text("2"))
            if case .text(let content)? = old?.tuple.values[3] { #expect(content.count == 6400) } else { Issue.record("old content: \(String(describing: old))") }
        }
        // The default identity: UPDATE without an old row, DELETE with the key only.
        #expect(messages.contains { if case .update(_, nil, let n) = $0 { n.values.count == 3 } else { false } })
        #expect(messages.contains { if case .delete(_, let o) = $0 { o.kind == .key && o.tuple.values[1] == .null } else { false } })
        // The enum's type, the emitted message, the TRUNCATE of two tables.
        #expect(messages.contains(.type(.init(oid: 16401, namespace: "public", name: "mood"))))
        #expect(messages.contains { if case .message(let lm) = $0 { lm.prefix == "rr" && lm.content == Array("hello".utf8) && lm.transactional } else { false } })
        #expect(messages.contains { if case .truncate(let t) = $0 { t.relations.count == 2 && !t.cascade } else { false } })
        // Twelve transactions; the unpublished table's two INSERTs (xid 735) produced nothing at all.
        #expect(messages.filter { if case .begin = $0 { true } else { false } }.count == 12)
        #expect(Set(captured.map(\.xid)) == Set((732...744).map(String.init)).subtracting(["735"]))
    }

    @Test("LSN text round-trips and refuses malformed text")
    func lsnText() {
        #expect(LSN(text: "0/15113C0") == LSN(0x15113C0))
        #expect(LSN(text: "16/B374D848")?.description == "16/B374D848")
        #expect(LSN(0xFFFF_FFFF_FFFF_FFFF).description == "FFFFFFFF/FFFFFFFF")
        for bad in ["", "0", "/1", "1/", "0/123456789", "g/1", "1/2/3", "-1/0", "+1/0", " 1/0"] {
            #expect(LSN(text: bad) == nil, "\(bad)")
        }
    }
}

/// A small deterministic generator for the mutation test.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
