import Foundation
import PostgresClient
@testable import ReplicationCore
import Testing

/// Capture end to end, the writes beside the ordinary INSERT: a session erased through
/// `replicator_erase_session`, `verify --repair` in a capturing region, an application that still
/// publishes, an UPDATE that leaves a TOASTed content unchanged.
@Suite("Capture writes", .serialized)
struct CaptureWritesTests {
    typealias C = CaptureTests

    static func harness(_ prefix: String) throws -> Harness {
        try Harness(extraConfig: "capture:\n  enabled: true\n  slot_prefix: \(prefix)\n")
    }

    static func prefix() -> String { "rr_cap_" + UUID().uuidString.prefix(8).lowercased() }

    static func produce(_ h: Harness, _ json: [String: Any], key: String) throws {
        try h.cluster.produceRaw(key: key, value: Array(try JSONSerialization.data(withJSONObject: json)))
    }

    @Test("replicator_erase_session: one session.deleted event; the session goes everywhere and a late message of it from another region stays deleted")
    func eraseSession() throws {
        let prefix = Self.prefix()
        let h = try Self.harness(prefix)
        defer { C.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        // The session has messages written in two regions; another session is kept.
        for n in 0..<3 {
            _ = try h.dbs.query("us-east-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 'erase-me', 'user', $2, 'us-east-1', '2026-12-06 10:00:00+00')",
                                [C.id(0, n), "to be forgotten \(n)"])
        }
        _ = try h.dbs.query("eu-west-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 'erase-me', 'assistant', 'from eu', 'eu-west-1', '2026-12-06 10:00:01+00')",
                            [C.id(1, 0)])
        _ = try h.dbs.query("eu-west-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 'keep', 'user', 'kept', 'eu-west-1', '2026-12-06 10:00:02+00')",
                            [C.id(1, 1)])
        try C.waitIdentical(h, count: 5)

        // It takes the applier's lock of the session (ApplyLocks): held elsewhere, the erasure waits.
        let holder = try h.dbs.connect("us-east-1"), eraser = try h.dbs.connect("us-east-1")
        defer { holder.close(); eraser.close() }
        try holder.execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext('region-replicator rows public.messages'), \(ApplyLocks.bucket(session: "erase-me")))")
        try eraser.execute("SET lock_timeout = '300ms'")
        #expect { try eraser.query("SELECT replicator_erase_session('erase-me')") }
            throws: { ($0 as? PostgresError)?.code.raw == "55P03" }
        try holder.execute("ROLLBACK")
        let erased = try eraser.query("SELECT replicator_erase_session('erase-me')").rows
        #expect(erased == [["4"]], "rows erased in us-east-1: \(erased)")
        try C.waitIdentical(h, count: 1)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT session_id FROM messages") == [["keep"]])
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_session_tombstones WHERE session_id = 'erase-me'") == [["1"]], "\(r)")
        }
        // One event for the erasure: the erased rows' DELETEs are not published one by one.
        try C.waitSlotsCaughtUp(h, prefix: prefix)
        let published = try C.records(h)
        #expect(published == 6, "records on the topic: \(published) for 5 inserts and one erasure")

        // A message of the erased session created before the erasure, published late by
        // ap-southeast-1's application, stays deleted everywhere; one created after it is kept.
        func upsert(_ id: String, _ created: String, _ content: String) -> [String: Any] {
            ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": id, "session_id": "erase-me",
             "role": "user", "content": content, "origin_region": "ap-southeast-1", "created_at": created, "version": 1]
        }
        try Self.produce(h, upsert(C.id(2, 0), "2026-12-06T09:00:00Z", "late"), key: "erase-me")
        try Self.produce(h, upsert(C.id(2, 1), "2099-01-01T00:00:00Z", "after the erasure"), key: "erase-me")
        try C.waitIdentical(h, count: 2)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT content FROM messages WHERE session_id = 'erase-me'") == [["after the erasure"]], "\(r)")
        }
        let log = h.daemonLogs()
        #expect(!log.contains("not published"), "\(log.suffix(3000))")
    }

    @Test("the example application with captured=True (no publish step) in every region: every region ends with the same rows; a session moved region sees its last message")
    func pythonExampleUnderCapture() throws {
        guard let python = EventContractTests.python else {
            throw TestSetupError("RR_TEST_PYTHON is not set: run the tests with `bash scripts/test` (it makes the venv)")
        }
        let prefix = Self.prefix()
        let port = try HTTPProbe.freePort()
        let h = try Harness(extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\ncapture:\n  enabled: true\n  slot_prefix: \(prefix)\n")
        defer { C.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        var arguments = [EventContractTests.repository + "/examples/python/demo.py", "--brokers", h.cluster.bootstrap, "--topic", h.cluster.topic]
        for r in h.regions { arguments += ["--region", "\(r)=\(h.dbs.conninfo(r))", "--captured", r] }
        // The session moves region with its capture token (/fresh waits for the home slot).
        arguments += ["--fresh-url", "http://127.0.0.1:\(port)"]
        let out = try TestEnvironment.run(python, arguments, timeout: .seconds(180))
        let summary = try #require(out.split(separator: "\n").last.flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        let expected = try #require(summary["expected_messages"] as? Int)
        #expect(summary["last_message_seen"] as? Bool == true && summary["may_be_missing"] as? Bool == false, "\(summary)")
        // Every region's erasure reached every region (rows alone could match before it did).
        try waitUntil("every region to hold the three session tombstones") {
            try h.regions.allSatisfy {
                try h.dbs.query($0, "SELECT count(*) FROM replicator_session_tombstones WHERE session_id LIKE 'erase-me-%'") == [["\(h.regions.count)"]]
            }
        }
        try C.waitIdentical(h, count: expected)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE session_id LIKE 'erase-me-%'") == [["0"]], "\(r)")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE version = 3") == [["\(h.regions.count)"]], "\(r)")
        }
        // Nothing was published by the application: per region 5 INSERTs, 2 UPDATEs, 1 DELETE
        // and 1 erasure, one record each, all capture's (and the moved session's last message).
        try C.waitSlotsCaughtUp(h, prefix: prefix)
        let published = try C.records(h)
        #expect(published == Int64(9 * h.regions.count + 1), "records on the topic: \(published)")
        let log = h.daemonLogs()
        #expect(!log.contains("not published"), "\(log.suffix(3000))")
    }

    @Test("verify --repair in a capturing region writes as the applier: nothing of it is published")
    func repairIsNotEchoed() throws {
        let prefix = Self.prefix()
        let h = try Self.harness(prefix)
        defer { C.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        for n in 0..<3 {
            _ = try h.dbs.query("us-east-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 's', 'user', $2, 'us-east-1', '2026-12-06 10:00:00+00')",
                                [C.id(0, n), "m\(n)"])
        }
        try C.waitIdentical(h, count: 3)
        // eu-west-1 loses a row behind capture's back (under an applier origin).
        let db = try h.dbs.connect("eu-west-1")
        defer { db.close() }
        let origin = ApplierOrigin.name(ApplierOrigin.poolSize)
        try db.execute("SELECT pg_replication_origin_create('\(origin)') WHERE pg_replication_origin_oid('\(origin)') IS NULL; SELECT pg_replication_origin_session_setup('\(origin)')")
        try db.query("DELETE FROM messages WHERE message_id = $1::uuid", [C.id(0, 1)])
        try db.execute("SELECT pg_replication_origin_session_reset()")
        try C.waitSlotsCaughtUp(h, prefix: prefix)
        #expect(try C.records(h) == 3)

        let repair = try runReplicator(["verify", "--config", h.configPath, "--repair"], timeout: .seconds(180))
        #expect(repair.status == 0, "\(repair.output)")
        #expect(try h.dbs.query("eu-west-1", "SELECT content FROM messages WHERE message_id = $1::uuid", [C.id(0, 1)]) == [["m1"]])
        try C.waitSlotsCaughtUp(h, prefix: prefix)
        let after = try C.records(h)
        #expect(after == 3, "records on the topic after the repair: \(after) for 3 local writes")
    }

    @Test("the application still publishes while capture runs: duplicates change nothing; an 8 KB TOASTed content whose version rises alone arrives whole")
    func bothWaysAndToast() throws {
        let prefix = Self.prefix()
        let h = try Self.harness(prefix)
        defer { C.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        // Both ways: the seed's application inserts locally (no id: the trigger derives it) and
        // publishes the same dict; capture publishes the INSERT too.
        for (r, region) in h.regions.enumerated() {
            for n in 0..<5 {
                let content = "both ways \(region) \(n)"
                _ = try h.dbs.query(region, "INSERT INTO messages (session_id, role, content, region, created_at) VALUES ($1, 'user', $2, $3, '2026-12-06 10:00:0\(r)')",
                                    ["s-\(n)", content, region])
                try Self.produce(h, ["session_id": "s-\(n)", "role": "user", "content": content, "region": region,
                                     "created_at": "2026-12-06T10:00:0\(r)"], key: "s-\(n)")
            }
        }
        try C.waitIdentical(h, count: 15)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters") == [["0"]], "\(r)")
        }

        // 8 KB of incompressible text (stored out of line), then a version raised alone: the
        // UPDATE's content arrives as "unchanged TOAST" and comes from the old row.
        var bytes = [UInt8](repeating: 0, count: 6144)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        let big = Data(bytes).base64EncodedString()
        #expect(big.utf8.count == 8192)
        let id = C.id(0, 99)
        _ = try h.dbs.query("us-east-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 'big', 'assistant', $2, 'us-east-1', '2026-12-06 11:00:00+00')",
                            [id, big])
        let stored = try h.dbs.query("us-east-1", "SELECT pg_column_size(content) > 2000, pg_column_size(content) < 8192 FROM messages WHERE message_id = $1::uuid", [id])
        #expect(stored == [["t", "f"]], "the content is stored uncompressed and out of line: \(stored)")
        try C.waitIdentical(h, count: 16)
        _ = try h.dbs.query("us-east-1", "UPDATE messages SET version = 2 WHERE message_id = $1::uuid", [id])
        try waitUntil("every region to hold version 2 of the big message") {
            try h.regions.allSatisfy { try h.dbs.query($0, "SELECT version FROM messages WHERE message_id = $1::uuid", [id]) == [["2"]] }
        }
        try C.waitIdentical(h, count: 16)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT content = $2 FROM messages WHERE message_id = $1::uuid", [id, big]) == [["t"]], "\(r)")
        }
        let log = h.daemonLogs()
        #expect(!log.contains("not published"), "\(log.suffix(3000))")
    }
}
