import Foundation
import Testing

/// `verify` and continuous verification while the regions are busy: messages streamed by edits,
/// repairs that cannot write everything, bookkeeping tables that a later schema could shadow,
/// and a rate limit that must not hold a snapshot open.
@Suite("verify under load: streamed edits, re-checked repairs, bookkeeping resolved once, pacing outside the snapshot", .serialized)
struct VerifyUnderLoadTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
    static let slices = "region_replicator_verify_slices_total"

    /// A caught-up harness, the daemon running. `seed`: a workload applied to every region (its
    /// origin's too); none: an empty topic, each origin's rows written by the test as the
    /// application would. `continuous`: continuous verification every second over the whole key
    /// space (one slice), with these extra keys of the `verify` section; nil: off.
    func harness(seed: UInt64? = nil, messages: Int = 100, continuous: String? = "") throws -> (Harness, DaemonEndpoint) {
        let port = try HTTPProbe.freePort()
        var extra = ""
        if let continuous {
            extra = """
                verify:
                  enabled: true
                  interval_seconds: 1
                  slices: 1
                \(continuous)

                """
        }
        let h = try Harness(maxBatchEvents: 200, extraConfig: extra + """
            http:
              listen: "127.0.0.1:\(port)"

            """)
        if let seed {
            var w = Workload(origins: Self.regions, seed: seed)
            w.generate(sessions: 10, messages: messages)
            try h.cluster.produce(w.events)
        }
        try h.startDaemon(environment: seed == nil ? [:] : VerifyTests.everywhere)
        try h.waitAllCaughtUp()
        return (h, DaemonEndpoint(port: port))
    }

    /// Slices verified so far by the daemon's continuous verification, by result.
    func slices(_ e: DaemonEndpoint) throws -> (consistent: Double, divergent: Double) {
        let m = try e.metrics()
        return (m[#"\#(Self.slices){result="consistent"}"#] ?? 0, m[#"\#(Self.slices){result="divergent"}"#] ?? 0)
    }

    @Test("Messages edited every 100 ms are no divergence: verify exits 0, anti-entropy finds nothing; a region stuck below the first pass's winner is reported")
    func streamedEdits() throws {
        let (h, endpoint) = try harness()
        // The origin writes first and publishes after (the other regions apply from Kafka).
        let hot = try StreamingEditor(h, origin: "eu-west-1", messages: 3)
        try hot.create()
        try h.waitAllCaughtUp()
        hot.start(period: .milliseconds(100))
        defer { hot.stop() }
        let before = try slices(endpoint)

        var candidates = 0
        for run in 1...2 {
            let v = try h.verify(["--json"])
            #expect(v.status == 0, "run \(run) at v\(hot.currentVersion): \(v.output)")
            candidates += try VerifyJSON(v.output).json["candidates"] as? Int ?? 0
        }
        #expect(candidates > 0, "the first passes saw the regions at different versions (else this proves nothing)")
        try waitUntil("three slices verified by the daemon while the messages are edited", timeout: .seconds(60)) {
            let now = try slices(endpoint)
            return now.consistent + now.divergent >= before.consistent + before.divergent + 3
        }
        let after = try slices(endpoint)
        let metrics = try endpoint.metrics()
        #expect(after.divergent == before.divergent, "slices found divergent while messages were streamed: \(after.divergent - before.divergent); log: \(h.daemonLogs().suffix(1500))")
        for r in Self.regions {
            #expect(metrics[#"region_replicator_divergent_rows{region="\#(r)"}"#] == 0, "\(r)")
        }
        #expect(hot.currentVersion >= 10 && hot.error == nil, "the messages were edited throughout: v\(hot.currentVersion) \(String(describing: hot.error))")

        // A message whose edits reach only its origin: the other regions stay at v1 while the
        // winner moves on — stuck below the first pass's winner, so divergent.
        let stuck = try StreamingEditor(h, origin: "eu-west-1", messages: 1, publishEdits: false)
        try stuck.create()
        try waitUntil("every region to hold the new message") {
            try Self.regions.allSatisfy { try h.dbs.query($0, "SELECT 1 FROM messages WHERE message_id = $1", [stuck.messageIDs[0]]).count == 1 }
        }
        stuck.start(period: .milliseconds(100))
        defer { stuck.stop() }
        try waitUntil("the unpublished edits to begin") { stuck.currentVersion >= 3 }
        let v = try h.verify(["--json"])
        #expect(v.status == 2, "\(v.output)")
        let id = stuck.messageIDs[0]
        #expect(try VerifyJSON(v.output).names == ["us-east-1|stale|\(id)", "ap-southeast-1|stale|\(id)"], "\(v.output)")
    }

    @Test("verify --repair re-checks what it repaired: a row it could not write leaves it divergent, exit 2")
    func repairRechecks() throws {
        let (h, _) = try harness(seed: 71, continuous: nil)
        let ap = "ap-southeast-1"
        let edited = try #require(try h.dbs.query("us-east-1", "SELECT message_id::text, version FROM messages WHERE version >= 2 ORDER BY message_id LIMIT 1").first)
        let other = try #require(try h.dbs.query("us-east-1", "SELECT message_id::text FROM messages WHERE message_id <> $1 ORDER BY message_id LIMIT 1", [edited[0]]).first?[0])
        // ap: an older version of one row, which a trigger (a hand-made guard) then keeps from
        // being updated; and one row missing, which repair can write.
        _ = try h.dbs.query(ap, "UPDATE messages SET version = version - 1, content = 'an older edit' WHERE message_id = $1", [edited[0]])
        _ = try h.dbs.query(ap, "DELETE FROM messages WHERE message_id = $1", [other])
        let db = try h.dbs.connect(ap)
        defer { db.close() }
        try db.execute("""
            CREATE FUNCTION rr_test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
            CREATE TRIGGER rr_test_refuse BEFORE UPDATE ON messages FOR EACH ROW
                WHEN (OLD.message_id = '\(edited[0]!)'::uuid) EXECUTE FUNCTION rr_test_refuse();
            """)

        let repair = try h.verify(["--repair", "--json"])
        #expect(repair.status == 2, "a repair that could not write every row exits 2: \(repair.output)")
        let report = try VerifyJSON(repair.output)
        let remaining = Set((report.json["remaining"] as? [[String: Any]] ?? []).map { "\($0["region"] ?? "?")|\($0["kind"] ?? "?")|\($0["message_id"] ?? "?")" })
        #expect(remaining == ["\(ap)|stale|\(edited[0]!)"], "\(repair.output)")
        #expect(try h.dbs.query(ap, "SELECT count(*) FROM messages WHERE message_id = $1", [other])[0][0] == "1", "the row it could write is written")

        try db.execute("DROP TRIGGER rr_test_refuse ON messages")
        let again = try h.verify(["--repair"])
        #expect(again.status == 0 && again.output.contains("verify: repaired"), "\(again.output)")
        #expect(try h.verify([]).status == 0)
    }

    @Test("verify and the lag monitor read the bookkeeping tables they resolved at connect, as the applier does, not a same-named table that appears earlier on the search_path later")
    func bookkeepingResolvedOnce() throws {
        let (h, endpoint) = try harness(seed: 72, continuous: nil)
        let (us, ap) = ("us-east-1", "ap-southeast-1")
        // ap's applier cannot store offsets: new events leave it behind, so verify's first pass
        // has candidates and it waits for every region's stored offsets to reach the topic.
        let freeze = try LagTests.OffsetsFreeze(h, ap)
        var more = Workload(origins: Self.regions, seed: 73)
        more.generate(sessions: 3, messages: 30, contentPrefix: "late")
        try h.cluster.produce(more.events)
        try h.waitCaughtUp(us)
        let verify = try Daemon(["verify", "--config", h.configPath, "--json", "--settle-timeout", "60"], logPath: h.dir + "/verify.log")
        try waitUntil("verify to wait for the stored offsets", timeout: .seconds(60)) {
            !(try h.dbs.query(ap, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'region-replicator verify' AND query LIKE '%replicator_offsets%'").isEmpty)
                || !verify.isRunning
        }
        // The role's own schema ("$user", first on the default search_path) appears in ap with
        // tables of the same names, the offsets one holding other figures (here: the topic's end).
        // Unqualified names now mean these in every session; the applier writes on where it
        // resolved them when it connected.
        let high = try h.cluster.highWatermarks()
        let db = try h.dbs.connect(ap)
        defer { db.close() }
        try db.execute("CREATE SCHEMA postgres")
        for t in ["replicator_offsets", "replicator_message_tombstones", "replicator_session_tombstones", "replicator_dead_letters"] {
            try db.execute("CREATE TABLE postgres.\(t) (LIKE public.\(t) INCLUDING ALL)")
        }
        for (p, hw) in high {
            _ = try db.query("INSERT INTO postgres.replicator_offsets (consumer_group, topic, partition, next_offset) VALUES ($1, $2, $3, $4)",
                             ["rr-test.\(ap)", h.cluster.topic, String(p), String(hw)])
        }
        let shadowed = Date().timeIntervalSince1970
        let stored = try h.dbs.query(ap, "SELECT partition, next_offset FROM public.replicator_offsets WHERE consumer_group = $1", ["rr-test.\(ap)"])
        let next = Dictionary(uniqueKeysWithValues: stored.map { (Int32($0[0]!)!, Int64($0[1]!)!) })
        let behind = high.reduce(Int64(0)) { $0 + max(0, $1.value - (next[$1.key] ?? 0)) }
        #expect(behind >= 30, "ap is behind by the new events: \(behind)")

        // /lag: what ap's applier has stored, not the shadow's figures.
        try waitUntil("a lag sample taken after the shadow tables appeared") {
            (LagTests.unix(try endpoint.lag()[ap]?["lag_sample_timestamp"]) ?? 0) > shadowed + 0.5
        }
        let lag = try endpoint.lag()[ap] ?? [:]
        #expect(lag.int("lag_events") == behind, "/lag of \(ap): \(lag)")

        // verify: waits for what ap's applier stores, so the events in flight are no divergence.
        try freeze.release()
        let status = try verify.wait(timeout: .seconds(90))
        let report = try VerifyJSON(verify.log)
        #expect(status == 0 && report.consistent == true && report.settled == true, "\(verify.log)")
        #expect(try h.dbs.query(ap, "SELECT count(*) FROM postgres.replicator_message_tombstones")[0][0] == "0", "nothing of ours writes to the shadow tables")
    }

    @Test("Anti-entropy's rate limit sleeps outside its snapshot: no session of it stays idle in transaction holding back vacuum")
    func pacingHoldsNoSnapshot() throws {
        // ~1,500 items per region at 1,000 per second: the rate limit sleeps seconds per slice.
        let (h, endpoint) = try harness(seed: 74, messages: 600, continuous: "  max_items_per_second: 1000")
        let items = try h.dbs.query("us-east-1", "SELECT (SELECT count(*) FROM messages) + (SELECT count(*) FROM replicator_message_tombstones)")[0][0].flatMap { Int($0) } ?? 0
        #expect(items * Self.regions.count >= 1500, "\(items) items per region")
        let before = try slices(endpoint)
        var held: [String] = []
        try waitUntil("two slices verified", timeout: .seconds(60), interval: .milliseconds(50)) {
            for r in try h.dbs.query("us-east-1", """
                SELECT pid, now() - state_change, backend_xmin FROM pg_stat_activity
                WHERE application_name = 'region-replicator anti-entropy' AND state = 'idle in transaction'
                  AND backend_xmin IS NOT NULL AND now() - state_change > interval '500 milliseconds'
                """) { held.append(r.map { $0 ?? "-" }.joined(separator: " ")) }
            let now = try slices(endpoint)
            return now.consistent + now.divergent >= before.consistent + before.divergent + 2
        }
        #expect(held.isEmpty, "anti-entropy sessions idle in transaction, holding a snapshot (pid, idle for, xmin): \(held.prefix(5))")
    }
}
