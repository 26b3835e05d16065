import Foundation
import Testing

/// While one batch's transaction is in the region's database the pipeline reads and builds the
/// next one. When that transaction fails, the failure is the batch's own: the records read
/// behind it are neither lost nor applied before it, and nothing reads as "offsets moved".
@Suite("A batch fails while the next one is built behind it", .serialized)
struct OverlapTests {
    static let region = "eu-west-1"

    /// Every committed transaction of the region's messages, in commit order: the first and
    /// last event number it inserted and how many (a trigger logs each insert with its
    /// transaction; a rolled-back transaction leaves nothing).
    static func transactions(_ h: Harness) throws -> [(first: Int, last: Int, count: Int)] {
        try h.dbs.query(region, "SELECT min(n), max(n), count(*) FROM apply_log GROUP BY tx ORDER BY tx").map {
            (Int($0[0] ?? "") ?? -1, Int($0[1] ?? "") ?? -1, Int($0[2] ?? "") ?? -1)
        }
    }

    @Test("The batch in the database fails (its backend terminated): it and the records behind it apply once, in order; no offsets-moved handling")
    func failureBehindTheBuild() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(regions: [Self.region], maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n",
                            partitions: 1)
        let setup = try h.dbs.connect(Self.region)
        defer { setup.close() }
        try setup.execute("""
            CREATE TABLE apply_log (seq bigserial PRIMARY KEY, tx bigint NOT NULL, n int NOT NULL);
            CREATE FUNCTION log_apply() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN INSERT INTO apply_log (tx, n) VALUES (txid_current(), NEW.content::int); RETURN NEW; END $$;
            CREATE TRIGGER log_apply AFTER INSERT ON messages FOR EACH ROW EXECUTE FUNCTION log_apply();
            """)
        func produce(_ range: Range<Int>) throws {
            for i in range {
                let value = Array(try JSONSerialization.data(withJSONObject: ApplierOrderTests.upsert(UUID().uuidString.lowercased(),
                                                                                                        content: "\(i)")))
                try h.cluster.produceRaw(key: "s1", value: value)
            }
            try h.cluster.producer.flush(timeoutMs: 30_000)
        }
        let daemon = try h.startDaemon()
        try produce(0..<100)
        try h.waitCaughtUp(Self.region, timeout: .seconds(60))

        // The messages table locked: the next batch's transaction waits in the database while
        // 400 more events arrive behind it (read and built meanwhile).
        let blocker = try h.dbs.connect(Self.region)
        defer { blocker.close() }
        try blocker.execute("BEGIN; LOCK TABLE messages IN SHARE MODE")
        try produce(100..<500)
        var backend = ""
        try waitUntil("the daemon's transaction to wait for the table lock", timeout: .seconds(30)) {
            let rows = try h.dbs.query(Self.region, """
                SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'region-replicator%' AND wait_event_type = 'Lock'
                """)
            backend = rows.first?[0] ?? ""
            return !backend.isEmpty
        }
        // It stays in the database (well within lock_timeout) while the pipeline reads behind it.
        let waiting = ContinuousClock.now
        try waitUntil("the batch to have waited 1.5 s", timeout: .seconds(10)) { ContinuousClock.now - waiting >= .milliseconds(1500) }
        _ = try h.dbs.query(Self.region, "SELECT pg_terminate_backend($1::int)", [backend])
        try blocker.execute("ROLLBACK")

        try h.waitCaughtUp(Self.region, timeout: .seconds(60))
        #expect(try h.storedOffsets(Self.region) == [0: 500])
        let count = try h.dbs.query(Self.region, "SELECT count(*), count(DISTINCT content) FROM messages")
        #expect(count == [["500", "500"]], "every event is one row")
        // In commit order, each transaction holds the events right after the previous one's.
        let txs = try Self.transactions(h)
        print("overlap: committed transactions (first...last event): \(txs.map { "\($0.first)...\($0.last)" })")
        var next = 0
        for t in txs {
            #expect(t.first == next && t.last - t.first + 1 == t.count, "transaction of \(t.first)...\(t.last) (\(t.count)) after \(next - 1): \(txs)")
            next = t.last + 1
        }
        #expect(next == 500, "\(txs)")
        let log = h.daemonLogs()
        #expect(log.contains("apply failed, retrying"), "the terminated transaction's failure is logged")
        #expect(!log.contains("stored offsets moved") && !log.contains("offsets_moved"), "nothing reads as offsets moved")
        let retries = try DaemonEndpoint(port: port).metrics().filter { $0.key.hasPrefix("region_replicator_apply_retries_total") }
        #expect(retries.values.reduce(0, +) >= 1, "\(retries)")
        #expect(daemon.isRunning)
    }
}
