import Foundation
import Testing
import PostgresClient

/// An application adopting the daemon: the article's unchanged write path, an existing table of
/// its own, and the equal-version tie-break.
@Suite("Adoption end to end", .serialized)
struct AdoptionTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    /// The columns every region must agree on (bookkeeping such as replicated_at may differ).
    static let compared = "message_id::text, session_id, role, content, region, created_at::text, version::text"

    /// What `RegionAwareDataLayer.write_message` does, unchanged: a plain INSERT of the dict into
    /// the local `messages`, then a publish of the same dict.
    func writeMessage(_ h: Harness, region: String, session: String, role: String, content: String,
                      createdAt: String) throws {
        let message: [String: String] = ["session_id": session, "role": role, "content": content,
                                         "region": region, "created_at": createdAt]
        let db = try h.dbs.connect(region)
        defer { db.close() }
        try db.query("INSERT INTO messages (session_id, role, content, region, created_at) VALUES ($1, $2, $3, $4, $5)",
                     [session, role, content, region, createdAt])
        let value = try JSONSerialization.data(withJSONObject: message)
        try h.cluster.produceRaw(key: session, value: Array(value))
    }

    @Test("The article's application unchanged: INSERT locally, publish the same dict; every region ends equal, ids included")
    func articleWritePathUnchanged() throws {
        let h = try Harness()
        try h.startDaemon()
        // `datetime.utcnow().isoformat()`: six fraction digits, or none when the microsecond is 0.
        var written: [[String]] = []
        for (i, region) in Self.regions.enumerated() {
            for k in 0..<4 {
                let micros = k == 3 ? "" : String(format: ".%06d", 100_000 * i + 1000 * k + 7)
                let createdAt = "2026-11-29T08:0\(i):1\(k)" + micros
                let message = [k % 2 == 0 ? "shared-session" : "session-\(region)", region, createdAt,
                               k % 2 == 0 ? "user" : "assistant", "«\(region)» message \(k) ✓"]
                try writeMessage(h, region: region, session: message[0], role: message[3], content: message[4],
                                 createdAt: createdAt)
                written.append(message)
            }
        }
        // The ids docs/events.md derives in Python, from the strings the application wrote.
        let derive = """
            import json, sys, uuid
            from datetime import datetime
            for s, r, c, role, content in json.loads(sys.argv[1]):
                t = datetime.fromisoformat(c)
                print(uuid.uuid5(uuid.NAMESPACE_URL, f"{s}\\n{r}\\n{t:%Y-%m-%dT%H:%M:%S.%f}\\n{role}\\n{content}"))
            """
        let argument = String(decoding: try JSONSerialization.data(withJSONObject: written), as: UTF8.self)
        let pythonIDs = try TestEnvironment.run("/usr/bin/python3", ["-c", derive, argument])
            .split(separator: "\n").map(String.init).sorted()
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.waitAllCaughtUp()

        let rows = try Self.regions.map { r in
            try h.dbs.query(r, "SELECT \(Self.compared) FROM messages ORDER BY message_id")
        }
        #expect(rows[0].count == written.count, "region \(Self.regions[0]) holds \(rows[0].count) of \(written.count) messages")
        #expect(rows[0].map { $0[0] ?? "" } == pythonIDs, "ids differ from the documented derivation")
        for (i, r) in Self.regions.enumerated() {
            #expect(rows[i] == rows[0], "region \(r) differs from \(Self.regions[0]): \(rows[i]) vs \(rows[0])")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE version <> 1")[0][0] == "0")
        }
        // The article's read_history, in every region: same messages, same order.
        for session in ["shared-session"] + Self.regions.map({ "session-\($0)" }) {
            let histories = try Self.regions.map { r in
                try h.dbs.query(r, "SELECT \(Self.compared) FROM (SELECT * FROM messages WHERE session_id = $1 ORDER BY created_at) AS history",
                                [session])
            }
            #expect(!histories[0].isEmpty)
            for (i, r) in Self.regions.enumerated() {
                #expect(histories[i] == histories[0], "read_history(\(session)) in \(r): \(histories[i]) vs \(histories[0])")
            }
        }
    }

    @Test("check-config warns when a region's database default TimeZone is not UTC, naming the fix")
    func timeZoneWarning() throws {
        let h = try Harness(regions: ["us-east-1"])
        let before = try runReplicator(["check-config", "--config", h.configPath, "--timeout", "5"])
        #expect(!before.output.contains("TimeZone"), "\(before.output)")
        _ = try h.dbs.query("us-east-1", "ALTER DATABASE \(h.dbs.database) SET TimeZone = 'America/New_York'")
        let after = try runReplicator(["check-config", "--config", h.configPath, "--timeout", "5"])
        #expect(after.output.contains("WARNING: the database's default TimeZone is America/New_York, not UTC"), "\(after.output)")
        #expect(after.output.contains("ALTER DATABASE \(h.dbs.database) SET TimeZone = 'UTC'"), "\(after.output)")
        // A warning, not a configuration error: the exit status is the same as before.
        #expect(after.status == before.status, "\(after.output)")
    }

    /// python3's hashlib, independent of the daemon and of Postgres: the SHA-256 of content, a
    /// zero byte and the attributes' jsonb text, in hex.
    func contentHash(_ content: String) throws -> String {
        try TestEnvironment.run("/usr/bin/python3", ["-c",
            "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode() + b'\\x00').hexdigest())", content])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test("Equal versions with different content converge to the greater content hash, whatever the order")
    func equalVersionTieBreak() throws {
        let h = try Harness(regions: ["us-east-1", "eu-west-1"])
        try h.startDaemon()
        let (a, b) = ("first draft", "second draft")
        let winner = try contentHash(a) > contentHash(b) ? a : b
        let ids = (1...4).map { "5f7e9c52-0000-4000-8000-00000000000\($0)" }
        func send(_ id: String, _ content: String, version: Int = 2) throws {
            try h.cluster.produceRaw(key: "tie-session", value: upsertEvent(id: id, session: "tie-session", content: content,
                                                                           origin: "ap-southeast-1", version: version))
        }
        // ids[0], ids[1]: a then b, and b then a, in separate batches (the database decides).
        try send(ids[0], a); try send(ids[1], b)
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.waitAllCaughtUp()
        try send(ids[0], b); try send(ids[1], a)
        // ids[2], ids[3]: both orders inside one batch (a second statement in the same pipeline).
        try send(ids[2], a); try send(ids[2], b); try send(ids[3], b); try send(ids[3], a)
        // A lower version never wins; a re-delivery of the winner is a duplicate.
        try send(ids[2], "older", version: 1); try send(ids[3], winner)
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.waitAllCaughtUp()
        for r in h.regions {
            let rows = try h.dbs.query(r, "SELECT message_id::text, content, version::text FROM messages WHERE session_id = 'tie-session' ORDER BY message_id")
            #expect(rows == ids.map { [$0, winner, "2"] }, "region \(r): \(rows)")
        }
    }

    static let existingTable = """
        CREATE TABLE app_messages (
            id uuid PRIMARY KEY,
            conversation_id text NOT NULL,
            speaker varchar(32) NOT NULL,
            body text NOT NULL,
            origin text NOT NULL,
            inserted_at timestamptz NOT NULL,
            rev bigint NOT NULL,
            extra jsonb,
            model text,
            tokens int DEFAULT 0)
        """

    static let existingTableConfig = """
          table: app_messages
          attributes_column: extra
          columns:
            message_id: id
            session_id: conversation_id
            role: speaker
            content: body
            region: origin
            created_at: inserted_at
            version: rev
            replicated_at: null
        """

    @Test("Replicates into an existing table with renamed columns and a jsonb attributes column")
    func existingTableWithRenamedColumns() throws {
        let h = try Harness(applyConfig: Self.existingTableConfig, setupSQL: Self.existingTable)
        for r in h.regions {
            // migrate did not create the table, so it created no table of its own and changed nothing.
            #expect(try h.dbs.query(r, "SELECT to_regclass('messages') IS NULL")[0][0] == "t")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'app_messages'::regclass")[0][0] == "0")
        }
        let check = try runReplicator(["check-config", "--config", h.configPath, "--timeout", "5"])
        #expect(check.status == 0, "\(check.output)")
        try h.startDaemon()
        let id = "5f7e9c52-0000-4000-8000-0000000000aa"
        var e1 = try JSONSerialization.jsonObject(with: Data(upsertEvent(id: id, session: "conv-1", content: "hello",
                                                                      origin: "sa-east-1"))) as! [String: Any]
        e1["attributes"] = ["model": "gpt-x", "tokens": ["in": 12, "out": 40], "tools": [["name": "search"]]]
        var e2 = e1
        e2["version"] = 2
        e2["content"] = "hello, edited"
        e2["attributes"] = ["model": "gpt-y"]
        e2["event_id"] = UUID().uuidString
        for e in [e1, e2] {
            try h.cluster.produceRaw(key: "conv-1", value: Array(try JSONSerialization.data(withJSONObject: e)))
        }
        // A deleted message and an erased session: the tombstone statements use the mapped columns.
        try h.cluster.produceRaw(key: "conv-3", value: upsertEvent(id: "5f7e9c52-0000-4000-8000-0000000000ab", session: "conv-3",
                                                                content: "deleted later", origin: "sa-east-1"))
        try h.cluster.produceRaw(key: "conv-3", value: Array(#"{"type":"message.deleted","event_id":"d1","message_id":"5f7e9c52-0000-4000-8000-0000000000ab","session_id":"conv-3","origin_region":"sa-east-1","occurred_at":"2026-11-24T11:00:00Z","version":2}"#.utf8))
        try h.cluster.produceRaw(key: "conv-4", value: upsertEvent(id: "5f7e9c52-0000-4000-8000-0000000000ac", session: "conv-4",
                                                                content: "erased later", origin: "sa-east-1"))
        try h.cluster.produceRaw(key: "conv-4", value: Array(#"{"type":"session.deleted","event_id":"d2","session_id":"conv-4","origin_region":"sa-east-1","occurred_at":"2026-11-25T00:00:00Z"}"#.utf8))
        // A seed-style event too: its id is derived, its attributes kept.
        let seed = #"{"session_id":"conv-2","role":"assistant","content":"hi","region":"eu-west-1","created_at":"2026-11-29T08:00:00.000001","attributes":{"model":"m"}}"#
        try h.cluster.produceRaw(key: "conv-2", value: Array(seed.utf8))
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.waitAllCaughtUp()
        for r in h.regions {
            let rows = try h.dbs.query(r, """
                SELECT conversation_id, speaker, body, origin, rev::text, extra::text, model, tokens::text
                FROM app_messages ORDER BY conversation_id
                """)
            var expected: [[String?]] = [["conv-1", "user", "hello, edited", "sa-east-1", "2", #"{"model": "gpt-y"}"#, nil, "0"]]
            if r != "eu-west-1" { expected.append(["conv-2", "assistant", "hi", "eu-west-1", "1", #"{"model": "m"}"#, nil, "0"]) }
            #expect(rows == expected, "region \(r): \(rows)")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }

        // A region whose table lacks a column, another whose id has no unique index.
        _ = try h.dbs.query("eu-west-1", "ALTER TABLE app_messages DROP COLUMN extra")
        _ = try h.dbs.query("ap-southeast-1", "ALTER TABLE app_messages DROP CONSTRAINT app_messages_pkey")
        let bad = try runReplicator(["check-config", "--config", h.configPath, "--timeout", "5"])
        #expect(bad.status == 78, "\(bad.output)")
        #expect(bad.output.contains(#"table app_messages has no column "extra" (for the event's attributes); fix: ALTER TABLE "app_messages" ADD COLUMN "extra" jsonb;"#),
                "\(bad.output)")
        #expect(bad.output.contains(#"table app_messages has no unique index on "id" alone (the upsert's conflict target); fix: CREATE UNIQUE INDEX "app_messages_id_key" ON "app_messages" ("id");"#),
                "\(bad.output)")
        // migrate never alters a table it did not create…
        let migrate = try runReplicator(["migrate", "--config", h.configPath])
        #expect(migrate.status == 78, "\(migrate.output)")
        #expect(try h.dbs.query("eu-west-1", "SELECT count(*) FROM pg_attribute WHERE attrelid = 'app_messages'::regclass AND attname = 'extra'")[0][0] == "0")
        // …unless told to, plainly.
        let alter = try runReplicator(["migrate", "--alter-existing-table", "--config", h.configPath])
        #expect(alter.status == 0, "\(alter.output)")
        let good = try runReplicator(["check-config", "--config", h.configPath, "--timeout", "5"])
        #expect(good.status == 0, "\(good.output)")
    }

    @Test("The Python reference producer (examples/python, psycopg + confluent-kafka) in three regions: every region ends equal")
    func pythonReferenceProducer() throws {
        guard let python = EventContractTests.python else {
            throw TestSetupError("RR_TEST_PYTHON is not set: run the tests with `bash scripts/test` (it makes the venv)")
        }
        let h = try Harness()
        try h.startDaemon()
        let example = EventContractTests.repository + "/examples/python/demo.py"
        var arguments = [example, "--brokers", h.cluster.bootstrap, "--topic", h.cluster.topic]
        for r in h.regions { arguments += ["--region", "\(r)=\(h.dbs.conninfo(r))"] }
        let out = try TestEnvironment.run(python, arguments, timeout: .seconds(180))
        let summary = try #require(out.split(separator: "\n").last.flatMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] })
        let expected = try #require(summary["expected_messages"] as? Int)
        try h.waitAllCaughtUp()
        let rows = try h.regions.map { r in try h.dbs.query(r, "SELECT \(Self.compared) FROM messages ORDER BY message_id") }
        #expect(rows[0].count == expected, "\(rows[0].count) messages, expected \(expected): \(rows[0])")
        for (i, r) in h.regions.enumerated() {
            #expect(rows[i] == rows[0], "region \(r) differs: \(rows[i]) vs \(rows[0])")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE session_id LIKE 'erase-me-%'")[0][0] == "0")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE version = 3")[0][0] == "\(h.regions.count)")
        }
    }

    @Test("run inspects the table: a region whose id column has no unique index waits, naming the fix, then replicates once fixed")
    func runInspectsTheTable() throws {
        let h = try Harness(regions: ["us-east-1"], applyConfig: Self.existingTableConfig, setupSQL: Self.existingTable)
        _ = try h.dbs.query("us-east-1", "ALTER TABLE app_messages DROP CONSTRAINT app_messages_pkey")
        let d = try h.startDaemon()
        try waitUntil("the daemon to report the missing unique index") {
            d.log.contains(#"has no unique index on \"id\" alone"#) || d.log.contains(#"has no unique index on "id" alone"#)
        }
        #expect(d.log.contains("CREATE UNIQUE INDEX"), "\(d.log)")
        try h.cluster.produceRaw(key: "conv-9", value: upsertEvent(id: "5f7e9c52-0000-4000-8000-0000000000bb", session: "conv-9",
                                                                content: "after the fix", origin: "sa-east-1"))
        try h.cluster.producer.flush(timeoutMs: 30_000)
        _ = try h.dbs.query("us-east-1", #"CREATE UNIQUE INDEX "app_messages_id_key" ON "app_messages" ("id")"#)
        try h.waitAllCaughtUp()
        #expect(try h.dbs.query("us-east-1", "SELECT body FROM app_messages") == [["after the fix"]])
    }

    @Test("migrate without the right to create pgcrypto prints exactly what a DBA must run, and exits 78")
    func migrateNamesTheExtensionForADBA() throws {
        let h = try Harness(regions: ["us-east-1"])
        let role = "rr_app_\(UUID().uuidString.prefix(8).lowercased())"
        // A fresh database without pgcrypto, owned by nobody special; the role may create tables only.
        let fresh = h.dbs.database + "_app"
        let admin = try PostgresConnection(conninfo: h.dbs.server("us-east-1").conninfo(database: "postgres"))
        defer {
            try? admin.execute("DROP DATABASE IF EXISTS \(fresh) WITH (FORCE)")
            try? admin.execute("DROP ROLE IF EXISTS \(role)")
            admin.close()
        }
        try admin.execute("CREATE ROLE \(role) LOGIN")
        try admin.execute("CREATE DATABASE \(fresh)")
        let owner = try PostgresConnection(conninfo: h.dbs.server("us-east-1").conninfo(database: fresh))
        try owner.execute("GRANT CREATE ON SCHEMA public TO \(role)")
        owner.close()
        let conninfo = h.dbs.server("us-east-1").conninfo(database: fresh).replacingOccurrences(of: "user=postgres", with: "user=\(role)")
        let yaml = try String(contentsOfFile: h.configPath, encoding: .utf8)
            .replacingOccurrences(of: h.dbs.conninfo("us-east-1"), with: conninfo)
        let path = h.dir + "/unprivileged.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        let migrate = try runReplicator(["migrate", "--config", path])
        #expect(migrate.status == 78, "\(migrate.output)")
        #expect(migrate.output.contains("a DBA must run: CREATE EXTENSION pgcrypto;  -- as a superuser or the database owner, in database \(fresh)"),
                "\(migrate.output)")
        // Everything else was created; the plain INSERT needs the trigger, which waits for the DBA.
        let check = try PostgresConnection(conninfo: conninfo)
        defer { check.close() }
        #expect(try check.query("SELECT to_regclass('messages') IS NOT NULL").rows == [["t"]])
        let owner2 = try PostgresConnection(conninfo: h.dbs.server("us-east-1").conninfo(database: fresh))
        try owner2.execute("CREATE EXTENSION pgcrypto")
        owner2.close()
        let again = try runReplicator(["migrate", "--config", path])
        #expect(again.status == 0, "\(again.output)")
        try check.execute("INSERT INTO messages (session_id, role, content, region, created_at) VALUES ('s', 'user', 'hi', 'us-east-1', '2026-11-29T08:00:00.000001')")
        #expect(try check.query("SELECT message_id IS NOT NULL, version FROM messages").rows == [["t", "1"]])
    }
}
