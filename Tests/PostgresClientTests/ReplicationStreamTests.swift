import Foundation
import Testing
@testable import PostgresClient

/// The replication stream against a real Postgres with `wal_level=logical` (the first server
/// `scripts/test` starts). Each test makes its own table, publication and slot, and drops them.
@Suite("ReplicationStream", .serialized, .timeLimit(.minutes(2)))
struct ReplicationStreamTests {
    /// A table, a publication of it and a pgoutput slot, named uniquely, dropped by `drop()`.
    final class Fixture {
        let name = "rr_stream_" + UUID().uuidString.prefix(8).lowercased()
        let db: PostgresConnection
        let conninfo: String
        let created: UInt64

        init() throws {
            conninfo = "host=127.0.0.1 port=\(try PostgresClientTests.port()) dbname=postgres user=postgres"
            db = try PostgresConnection(conninfo: conninfo, applicationName: "ReplicationStreamTests")
            let level = try db.query("SHOW wal_level").rows.first?.first ?? nil
            guard level == "logical" else {
                throw PostgresClientTests.SetupError(description: "the test server runs with wal_level=\(level ?? "?"); scripts/test starts it with logical")
            }
            try db.execute("CREATE TABLE \(name)(id int primary key, body text); CREATE TABLE \(name)_other(id int); CREATE PUBLICATION \(name) FOR TABLE \(name)")
            let lsn = try db.query("SELECT lsn FROM pg_create_logical_replication_slot($1, 'pgoutput')", [name]).rows.first?.first ?? nil
            created = try Self.lsn(lsn)
        }

        static func lsn(_ text: String?) throws -> UInt64 {
            let parts = (text ?? "").split(separator: "/")
            guard parts.count == 2, let hi = UInt64(parts[0], radix: 16), let lo = UInt64(parts[1], radix: 16) else {
                throw PostgresClientTests.SetupError(description: "not an LSN: \(text ?? "NULL")")
            }
            return hi << 32 | lo
        }

        func stream() throws -> PostgresReplicationStream {
            let s = try PostgresReplicationStream(conninfo: conninfo, applicationName: "ReplicationStreamTests")
            try s.startLogical(slot: name, start: 0, options: [("proto_version", "1"), ("publication_names", name)])
            return s
        }

        func confirmedFlush() throws -> UInt64 {
            try Self.lsn(try db.query("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", [name]).rows.first?.first ?? nil)
        }

        /// Reads until `count` commits arrived (or fails at the deadline); every XLogData payload in order.
        static func readCommits(_ s: PostgresReplicationStream, _ count: Int) throws -> [(start: UInt64, data: [UInt8])] {
            var out: [(UInt64, [UInt8])] = []
            let deadline = ContinuousClock.now.advanced(by: .seconds(30))
            while out.filter({ $0.1.first == UInt8(ascii: "C") }).count < count {
                guard ContinuousClock.now < deadline else { throw PostgresClientTests.SetupError(description: "only \(out.count) messages in 30 s") }
                if case .xlogData(let start, _, _, let data)? = try s.receive(timeout: .milliseconds(500)) { out.append((start, data)) }
            }
            return out
        }

        func drop() {
            // The walsender of a closed stream may take a moment to release the slot.
            for _ in 0..<100 {
                if (try? db.query("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", [name])) != nil { break }
                Thread.sleep(forTimeInterval: 0.05)
            }
            try? db.execute("DROP PUBLICATION IF EXISTS \(name); DROP TABLE IF EXISTS \(name); DROP TABLE IF EXISTS \(name)_other")
            db.close()
        }
    }

    @Test("the stream carries exactly the slot's pgoutput messages; a commit's XLogData starts at its end LSN")
    func streamsTheSlot() throws {
        let f = try Fixture()
        defer { f.drop() }
        try f.db.execute("INSERT INTO \(f.name) VALUES (1, 'one'), (2, NULL)")
        try f.db.execute("BEGIN; UPDATE \(f.name) SET body = 'uno' WHERE id = 1; DELETE FROM \(f.name) WHERE id = 2; COMMIT")
        // The oracle: the same slot read through SQL (peek does not consume).
        let peeked = try f.db.query("SELECT lsn::text, encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, 'proto_version', '1', 'publication_names', $2)", [f.name, f.name]).rows
        #expect(peeked.count == 9)  // B R I I C, B U D C
        let s = try f.stream()
        defer { s.close() }
        let got = try Fixture.readCommits(s, 2)
        #expect(got.map { hex($0.data) } == peeked.map { $0[1]! })
        let commits = got.filter { $0.data.first == UInt8(ascii: "C") }
        #expect(commits.map(\.start) == (try peeked.filter { $0[1]!.hasPrefix("43") }.map { try Fixture.lsn($0[0]) }))
    }

    @Test("a status update moves the slot's confirmed position, and a new stream resumes after it")
    func statusUpdateConfirms() throws {
        let f = try Fixture()
        defer { f.drop() }
        try f.db.execute("INSERT INTO \(f.name) VALUES (1, 'one')")
        try f.db.execute("INSERT INTO \(f.name) VALUES (2, 'two')")
        var s = try f.stream()
        let got = try Fixture.readCommits(s, 2)
        let firstCommitEnd = got.first { $0.data.first == UInt8(ascii: "C") }!.start
        try s.sendStatus(written: firstCommitEnd, flushed: firstCommitEnd, applied: firstCommitEnd)
        try waitFor("the slot to confirm \(firstCommitEnd)") { try f.confirmedFlush() == firstCommitEnd }
        s.close()
        // Only the second transaction comes again.
        s = try reconnect(f)
        defer { s.close() }
        let again = try Fixture.readCommits(s, 1)
        let inserts = again.filter { $0.data.first == UInt8(ascii: "I") }
        #expect(inserts.count == 1 && String(decoding: inserts[0].data, as: UTF8.self).contains("two"))
    }

    @Test("an idle slot: a requested keepalive carries the WAL end past other tables' writes, and confirming it moves the slot")
    func keepaliveMovesAnIdleSlot() throws {
        let f = try Fixture()
        defer { f.drop() }
        let s = try f.stream()
        defer { s.close() }
        for i in 0..<20 { try f.db.execute("INSERT INTO \(f.name)_other SELECT g FROM generate_series(1, 500) g; SELECT \(i)") }
        let walNow = try Fixture.lsn(try f.db.query("SELECT pg_current_wal_lsn()::text").rows.first?.first ?? nil)
        var end: UInt64 = 0
        let deadline = ContinuousClock.now.advanced(by: .seconds(30))
        while end < walNow && ContinuousClock.now < deadline {
            try s.sendStatus(written: 0, flushed: 0, applied: 0, replyRequested: true)
            switch try s.receive(timeout: .milliseconds(500)) {
            case .keepalive(let e, _, _)?: end = max(end, e)
            case .xlogData(_, _, _, let data)?: Issue.record("nothing of the publication was written, got \(hex(data))")
            case nil: break
            }
        }
        #expect(end >= walNow, "keepalive WAL end \(end) vs the WAL written \(walNow)")
        #expect(try f.confirmedFlush() < walNow)
        try s.sendStatus(written: end, flushed: end, applied: end)
        try waitFor("the slot to confirm the keepalive's WAL end") { try f.confirmedFlush() == end }
    }

    @Test("the server's refusals keep their SQLSTATE: no such slot, slot in use, stream terminated")
    func refusals() throws {
        let f = try Fixture()
        defer { f.drop() }
        let missing = try PostgresReplicationStream(conninfo: f.conninfo, applicationName: "ReplicationStreamTests")
        #expect { try missing.startLogical(slot: "rr_no_such_slot", start: 0, options: [("proto_version", "1"), ("publication_names", f.name)]) }
            throws: { ($0 as? PostgresError)?.code.raw == "42704" }
        let s = try f.stream()
        #expect { _ = try f.stream() } throws: { ($0 as? PostgresError)?.code.raw == "55006" }
        try f.db.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '\(f.name)'")
        #expect(throws: PostgresError.self) {
            for _ in 0..<100 { _ = try s.receive(timeout: .milliseconds(100)) }
        }
        #expect(!s.isOpen)
    }

    @Test("malformed frames from the server are errors, never a trap")
    func hostileFrames() throws {
        let w = [UInt8(ascii: "w")] + [UInt8](repeating: 0, count: 7) + [1] + [UInt8](repeating: 0, count: 7) + [2] + [UInt8](repeating: 0, count: 8) + [0x42]
        #expect(try PostgresReplicationStream.parse(w) == .xlogData(start: 1, end: 2, sendTime: 0, data: [0x42]))
        let k = [UInt8(ascii: "k")] + [UInt8](repeating: 0, count: 7) + [9] + [UInt8](repeating: 0, count: 8) + [1]
        #expect(try PostgresReplicationStream.parse(k) == .keepalive(end: 9, sendTime: 0, replyRequested: true))
        for bad in [[], [UInt8(ascii: "x")], Array(w.prefix(24)), Array(k.prefix(17)), k + [0], Array(k.dropLast()) + [2]] {
            #expect(throws: PostgresError.self, "\(bad)") { try PostgresReplicationStream.parse(bad) }
        }
        let s = try PostgresReplicationStream(conninfo: "host=127.0.0.1 port=\(try PostgresClientTests.port()) dbname=postgres user=postgres",
                                              applicationName: "ReplicationStreamTests")
        #expect(throws: PostgresError.self) { try s.startLogical(slot: "Bad\"Name", start: 0, options: []) }
    }

    func reconnect(_ f: Fixture) throws -> PostgresReplicationStream {
        var last: (any Error)? = nil
        for _ in 0..<100 {
            do { return try f.stream() } catch { last = error; Thread.sleep(forTimeInterval: 0.05) }  // the old walsender is still exiting
        }
        throw last!
    }

    func waitFor(_ what: String, _ condition: () throws -> Bool) throws {
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while ContinuousClock.now < deadline {
            if try condition() { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        throw PostgresClientTests.SetupError(description: "timed out waiting for \(what)")
    }
}

func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
