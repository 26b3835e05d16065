import Foundation
import PostgresClient
import ReplicationCore
import Testing

/// Capture end to end: three regions whose application only writes locally (no publishing), the
/// daemon publishing each region's own writes from its logical replication slot, a real broker.
@Suite("Capture", .serialized)
struct CaptureTests {
    typealias RowText = [String?]

    /// Every row of `messages` in `region`, as text, sorted.
    static func rows(_ h: Harness, _ region: String) throws -> [RowText] {
        try h.dbs.query(region, """
            SELECT message_id::text, session_id, role, content, region,
                   to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), version::text
            FROM messages ORDER BY message_id
            """)
    }

    /// Records on the topic (the sum of the partitions' high watermarks).
    static func records(_ h: Harness) throws -> Int64 { try h.cluster.highWatermarks().values.reduce(0, +) }

    /// Waits until every region holds the same rows, `count` of them.
    static func waitIdentical(_ h: Harness, count: Int, timeout: Duration = .seconds(60)) throws {
        do {
            try waitUntil("every region to hold the same \(count) rows", timeout: timeout) {
                let first = try rows(h, h.regions[0])
                return try first.count == count && h.regions.dropFirst().allSatisfy { try rows(h, $0) == first }
            }
        } catch {
            // The daemon's log as it is when the wait gave up, not as it was when it began.
            throw TestSetupError("\(error) (rows: \(h.regions.map { r in "\(r) \((try? rows(h, r).count).map(String.init) ?? "?")" }); log: \(h.daemonLogs().suffix(6000)))")
        }
    }

    /// Waits until each region's slot confirmed the WAL written so far: every change before now,
    /// the applier's echoes included, was received and published or filtered out.
    static func waitSlotsCaughtUp(_ h: Harness, prefix: String) throws {
        for r in h.regions {
            let now = try h.dbs.query(r, "SELECT pg_current_wal_lsn()::text")[0][0]!
            try waitUntil("the capture slot of \(r) to confirm \(now)", timeout: .seconds(30)) {
                try h.dbs.query(r, "SELECT confirmed_flush_lsn >= $1::pg_lsn FROM pg_replication_slots WHERE slot_name LIKE $2 || '%' AND database = current_database()",
                                [now, prefix])[0][0] == "t"
            }
        }
    }

    static func insert(_ db: PostgresConnection, id: String?, session: String, content: String, region: String) throws {
        if let id {
            try db.query("INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, $2, 'user', $3, $4, '2026-12-06 10:00:00.123456+00')",
                         [id, session, content, region])
        } else {
            // The original application's INSERT: no id (the trigger derives it), no version.
            try db.query("INSERT INTO messages (session_id, role, content, region, created_at) VALUES ($1, 'assistant', $2, $3, '2026-12-06 10:00:01+00')",
                         [session, content, region])
        }
    }

    static func id(_ region: Int, _ n: Int) -> String { String(format: "00000000-0000-4000-8000-%04d%08d", region, n) }

    @Test("the application only writes locally: identical rows everywhere, one record per local write, no echo; SIGKILL with events unacknowledged loses nothing")
    func captureEndToEnd() throws {
        let prefix = "rr_cap_" + UUID().uuidString.prefix(8).lowercased()
        let h = try Harness(extraConfig: "capture:\n  enabled: true\n  slot_prefix: \(prefix)\n", standaloneBroker: true)
        defer { Self.dropSlots(h, prefix: prefix) }
        let daemon = try h.startDaemon()
        let dbs = try h.regions.map { try h.dbs.connect($0) }
        defer { dbs.forEach { $0.close() } }

        // 20 messages from each region's application, no publishing; us-east-1's the seed-style way.
        for (r, region) in h.regions.enumerated() {
            for n in 0..<20 {
                try Self.insert(dbs[r], id: r == 0 ? nil : Self.id(r, n), session: "s-\(n % 4)",
                                content: "\(region) message \(n) \"quoted\" \\ é", region: region)
            }
        }
        try Self.waitIdentical(h, count: 60)
        // A local UPDATE (new version) of a message that came from another region, and a local
        // DELETE of another region's message.
        try dbs[0].query("UPDATE messages SET content = 'edited in us-east-1', version = 2 WHERE message_id = $1::uuid", [Self.id(1, 3)])
        let seedID = try h.dbs.query("us-east-1", "SELECT message_id::text FROM messages WHERE content = 'us-east-1 message 5 \"quoted\" \\ é'")[0][0]!
        try dbs[2].query("DELETE FROM messages WHERE message_id = $1::uuid", [seedID])
        try Self.waitIdentical(h, count: 59)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT content, version FROM messages WHERE message_id = $1::uuid", [Self.id(1, 3)]) == [["edited in us-east-1", "2"]])
            #expect(try h.dbs.query(r, "SELECT version FROM replicator_message_tombstones WHERE message_id = $1::uuid", [seedID]) == [["2"]])
        }
        // No echo: once every slot confirmed everything (the applier's writes included), the
        // topic holds exactly one record per local write.
        try Self.waitSlotsCaughtUp(h, prefix: prefix)
        let published = try Self.records(h)
        #expect(published == 62, "records on the topic: \(published) for 62 local writes")

        // `replay` in a capturing region marks its writes as the applier's: a row removed by hand
        // (under an applier origin, so capture ignores the removal) comes back, and is not
        // published again.
        let handOrigin = ApplierOrigin.name(ApplierOrigin.poolSize)
        try dbs[0].execute("SELECT pg_replication_origin_create('\(handOrigin)') WHERE pg_replication_origin_oid('\(handOrigin)') IS NULL; SELECT pg_replication_origin_session_setup('\(handOrigin)')")
        try dbs[0].query("DELETE FROM messages WHERE message_id = $1::uuid", [Self.id(1, 7)])
        try dbs[0].execute("SELECT pg_replication_origin_session_reset()")
        let replay = try runReplicator(["replay", "--config", h.configPath, "--region", "us-east-1", "--from-offset", "0"])
        #expect(replay.status == 0, "\(replay.output)")
        #expect(try h.dbs.query("us-east-1", "SELECT count(*) FROM messages WHERE message_id = $1::uuid", [Self.id(1, 7)]) == [["1"]])
        try Self.waitSlotsCaughtUp(h, prefix: prefix)
        let afterReplay = try Self.records(h)
        #expect(afterReplay == 62, "records on the topic after the replay: \(afterReplay) for 62 local writes")

        // An idle slot moves with other tables' writes: it holds no WAL for nothing.
        try dbs[1].execute("CREATE TABLE unrelated (id int); INSERT INTO unrelated SELECT generate_series(1, 20000)")
        try Self.waitSlotsCaughtUp(h, prefix: prefix)
        let afterIdle = try Self.records(h)
        #expect(afterIdle == 62, "records on the topic: \(afterIdle) for 62 local writes")

        // Kafka away: capture receives eu-west-1's writes but may not confirm them. The slot stays
        // behind them (checked after the server has sent them and heard a status update since),
        // then the daemon is SIGKILLed with the events unacknowledged in its producer; more writes
        // while it is down; after the brokers and the daemon are back every region holds exactly
        // the rows.
        try h.cluster.process!.setBrokers(up: false)
        for n in 100..<140 {
            try Self.insert(dbs[1], id: Self.id(1, n), session: "burst-\(n % 7)", content: "burst \(n)", region: "eu-west-1")
        }
        let written = try h.dbs.query("eu-west-1", "SELECT pg_current_wal_lsn()::text")[0][0]!
        let sentAt = try Self.walsender(h, "eu-west-1", "sent_lsn >= $1::pg_lsn", [written])
        try Self.walsender(h, "eu-west-1", "reply_time > $1::timestamptz", [sentAt], timeout: .seconds(30))
        let confirmed = try h.dbs.query("eu-west-1", "SELECT confirmed_flush_lsn < $1::pg_lsn FROM pg_replication_slots WHERE slot_name = $2",
                                        [written, prefix + "_eu_west_1"])
        #expect(confirmed == [["t"]], "the slot confirmed writes Kafka never acknowledged")
        daemon.kill9()
        try h.cluster.process!.setBrokers(up: true)
        for n in 140..<190 {
            try Self.insert(dbs[1], id: Self.id(1, n), session: "burst-\(n % 7)", content: "burst \(n)", region: "eu-west-1")
        }
        try h.startDaemon()
        try Self.waitIdentical(h, count: 59 + 90, timeout: .seconds(90))
        try Self.waitSlotsCaughtUp(h, prefix: prefix)
        let total = try Self.records(h)
        #expect(total >= 62 + 90, "records on the topic: \(total) for \(62 + 90) local writes")
        print("capture end to end: \(total) records for \(62 + 90) local writes (re-sent after the SIGKILL: \(total - 62 - 90))")
        let log = h.daemonLogs()
        #expect(!log.contains("not published"), "\(log.suffix(3000))")
        #expect(log.components(separatedBy: "capture streaming the slot").count - 1 >= 6)
    }

    @Test("a table without REPLICA IDENTITY FULL is reported by check-config and the daemon, and migrate fixes it; migrate is idempotent")
    func replicaIdentityIsReported() throws {
        let prefix = "rr_cap_" + UUID().uuidString.prefix(8).lowercased()
        let h = try Harness(regions: ["us-east-1", "eu-west-1"], extraConfig: "capture:\n  enabled: true\n  slot_prefix: \(prefix)\n")
        defer { Self.dropSlots(h, prefix: prefix) }
        let again = try runReplicator(["migrate", "--config", h.configPath])
        #expect(again.status == 0 && !again.output.contains("created"), "\(again.output)")
        _ = try h.dbs.query("eu-west-1", "ALTER TABLE messages REPLICA IDENTITY DEFAULT")
        let check = try runReplicator(["check-config", "--config", h.configPath])
        #expect(check.status == 78, "\(check.output)")
        #expect(check.output.contains("capture: table messages does not log the old row of UPDATE and DELETE (REPLICA IDENTITY is not FULL)")
                && check.output.contains("ALTER TABLE \"messages\" REPLICA IDENTITY FULL"), "\(check.output)")
        let daemon = try h.startDaemon()
        try waitUntil("the daemon to report eu-west-1's replica identity") {
            daemon.log.split(separator: "\n").contains { $0.contains("capture cannot stream this region until this is fixed") && $0.contains("eu-west-1")
                && $0.contains("REPLICA IDENTITY is not FULL") }
        }
        let fixed = try runReplicator(["migrate", "--config", h.configPath, "--region", "eu-west-1"])
        #expect(fixed.status == 0 && fixed.output.contains("table messages: REPLICA IDENTITY FULL"), "\(fixed.output)")
        _ = try h.dbs.query("eu-west-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 's', 'user', 'after the fix', 'eu-west-1', now())",
                        [Self.id(1, 1)])
        try waitUntil("us-east-1 to receive eu-west-1's write once its capture streams", timeout: .seconds(90)) {
            try h.dbs.query("us-east-1", "SELECT content FROM messages") == [["after the fix"]]
        }
    }

    @Test("each applier connection takes its own replication origin of the pool; a closed connection frees it")
    func applierOriginPool() throws {
        let server = TestEnvironment.servers[0]
        func connect() throws -> PostgresConnection { try PostgresConnection(conninfo: server.conninfo(database: "postgres")) }
        let a = try connect(), b = try connect()
        defer { a.close(); b.close() }
        let first = try ApplierOrigin.markSession(a), second = try ApplierOrigin.markSession(b)
        #expect(first != second && ApplierOrigin.isApplier(first) && ApplierOrigin.isApplier(second))
        let active = try a.query("SELECT pg_replication_origin_session_is_setup()").rows
        #expect(active == [["t"]])
        a.close()
        // The name a closed session held is free again (the backend may take a moment to exit).
        try waitUntil("the first origin to be free again") {
            let probe = try connect()
            defer { probe.close() }
            return try ApplierOrigin.markSession(probe) == first
        }
        #expect(!ApplierOrigin.isApplier("pg_16384_sub") && !ApplierOrigin.isApplier("region_replicator"))
    }

    /// Waits until the capture walsender of `region` satisfies `condition` (SQL over
    /// `pg_stat_replication`); returns the server's time then.
    @discardableResult
    static func walsender(_ h: Harness, _ region: String, _ condition: String, _ params: [String?],
                          timeout: Duration = .seconds(20)) throws -> String {
        var at = ""
        try waitUntil("the capture walsender of \(region): \(condition)", timeout: timeout) {
            let r = try h.dbs.query(region, "SELECT now()::text FROM pg_stat_replication WHERE application_name = $\(params.count + 1) AND \(condition)",
                                    params + ["region-replicator capture \(region)"])
            at = r.first?.first.flatMap { $0 } ?? ""
            return !r.isEmpty
        }
        return at
    }

    /// Kills the daemons, then drops the test's slots (a slot left behind would hold the shared
    /// test server's WAL).
    static func dropSlots(_ h: Harness, prefix: String) {
        for d in h.daemons { d.kill9() }
        for r in h.regions {
            try? waitUntil("the capture slot of \(r) to be released and dropped", timeout: .seconds(20)) {
                let left = try h.dbs.query(r, """
                    SELECT count(pg_drop_replication_slot(slot_name)) FILTER (WHERE NOT active), count(*) FILTER (WHERE active)
                    FROM pg_replication_slots WHERE slot_name LIKE $1 || '%'
                    """, [prefix])
                return left.first?[1] == "0"
            }
        }
    }
}
