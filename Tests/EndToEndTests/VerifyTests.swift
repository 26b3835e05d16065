import Foundation
import Testing

/// End-to-end tests of `region-replicator verify`: the real binary, the mock Kafka cluster, one
/// real Postgres per region, a running daemon.
@Suite("verify and verify --repair end to end", .serialized)
struct VerifyTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
    /// Every region applies every event (its own origin's too), so all three must be equal.
    static let everywhere = ["REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN": "true"]

    /// A caught-up harness with a mixed workload (edits, deletions, session erasures), the daemon running.
    func caughtUp(seed: UInt64) throws -> Harness {
        let h = try Harness(maxBatchEvents: 200)
        var w = Workload(origins: Self.regions, seed: seed)
        w.generate(sessions: 30, messages: 1500)
        w.shuffle()
        try h.startDaemon(environment: Self.everywhere)
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        for r in h.regions { #expect(try h.rows(r) == w.expectedRows(in: r, applyToOrigin: true)) }
        return h
    }

    @Test("One divergence of each kind planted: verify exits 2 and names exactly those; --repair --dry-run writes nothing; --repair, then verify exits 0")
    func plantedDivergences() throws {
        let h = try caughtUp(seed: 61)
        let (us, eu, ap) = ("us-east-1", "eu-west-1", "ap-southeast-1")
        let clean = try h.verify(["--json"])
        #expect(clean.status == 0, "\(clean.output)")
        #expect(try VerifyJSON(clean.output).consistent == true)
        let tombstones = try #require(try h.dbs.query(us, "SELECT count(*) FROM replicator_message_tombstones").first?[0].flatMap { Int($0) })
        let erased = Set(try h.dbs.query(us, "SELECT session_id FROM replicator_session_tombstones").compactMap { $0[0] })
        #expect(tombstones > 0 && !erased.isEmpty, "the workload deletes messages and erases sessions")

        // Sessions with live rows, none of them erased: one per planted divergence.
        let live = try h.dbs.query(us, "SELECT session_id FROM messages GROUP BY 1 HAVING count(*) >= 3 ORDER BY 1")
            .compactMap { $0[0] }.filter { !erased.contains($0) }
        #expect(live.count >= 3)
        var expected: Set<String> = []

        // 1. A missing row (eu-west-1).
        let missing = try #require(try h.dbs.query(us, "SELECT message_id::text FROM messages WHERE session_id = $1 ORDER BY message_id LIMIT 1", [live[0]]).first?[0])
        _ = try h.dbs.query(eu, "DELETE FROM messages WHERE message_id = $1", [missing])
        expected.insert("\(eu)|missing|\(missing)")

        // 2. A stale version (ap-southeast-1): an older version of an edited row.
        let edited = try #require(try h.dbs.query(us, "SELECT message_id::text, version FROM messages WHERE version >= 2 AND session_id <> ALL($1::text[]) ORDER BY message_id LIMIT 1",
                                                  ["{\(live[0]),\(live[1])}"]).first)
        _ = try h.dbs.query(ap, "UPDATE messages SET version = version - 1, content = 'an older edit' WHERE message_id = $1", [edited[0]])
        expected.insert("\(ap)|stale|\(edited[0]!)")

        // 3. A resurrected row (us-east-1): a deleted message back, at the version its tombstone covers.
        let tomb = try #require(try h.dbs.query(us, """
            SELECT message_id::text, session_id, version FROM replicator_message_tombstones t
            WHERE NOT EXISTS (SELECT 1 FROM replicator_session_tombstones s WHERE s.session_id = t.session_id)
            ORDER BY message_id LIMIT 1
            """).first)
        _ = try h.dbs.query(us, "INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) VALUES ($1, $2, 'user', 'back from the dead', 'us-east-1', now(), $3)",
                            [tomb[0], tomb[1], tomb[2]])
        expected.insert("\(us)|resurrected|\(tomb[0]!)")

        // 4. A row only one region has (eu-west-1): its origin wrote it and never published.
        let lonely = UUID().uuidString.lowercased()
        _ = try h.dbs.query(eu, "INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) VALUES ($1, 'never-published', 'user', 'local only', 'eu-west-1', now(), 1)", [lonely])
        expected.formUnion(["\(eu)|only_here|\(lonely)", "\(us)|missing|\(lonely)", "\(ap)|missing|\(lonely)"])

        // 5. A region that never saw a session (ap-southeast-1): none of its rows or tombstones.
        let unseen = live[1]
        // (Read from eu-west-1: us-east-1 now holds the resurrected row, which may be of this session.)
        var unseenExpected: Set<String> = tomb[1] == unseen ? ["\(us)|resurrected|\(tomb[0]!)"] : []
        for r in try h.dbs.query(eu, "SELECT message_id::text FROM messages WHERE session_id = $1", [unseen]) { unseenExpected.insert("\(ap)|missing|\(r[0]!)") }
        for r in try h.dbs.query(eu, "SELECT message_id::text FROM replicator_message_tombstones WHERE session_id = $1", [unseen]) { unseenExpected.insert("\(ap)|tombstone_missing|\(r[0]!)") }
        expected.formUnion(unseenExpected)
        _ = try h.dbs.query(ap, "DELETE FROM messages WHERE session_id = $1", [unseen])
        _ = try h.dbs.query(ap, "DELETE FROM replicator_message_tombstones WHERE session_id = $1", [unseen])

        // 6. A region that never saw a session's erasure (us-east-1 lost the session tombstone).
        let erasedSession = erased.sorted()[0]
        _ = try h.dbs.query(us, "DELETE FROM replicator_session_tombstones WHERE session_id = $1", [erasedSession])
        expected.insert("\(us)|session_tombstone_missing|\(erasedSession)")

        let divergent = try h.verify(["--json"])
        #expect(divergent.status == 2, "\(divergent.output)")
        let report = try VerifyJSON(divergent.output)
        #expect(report.consistent == false && report.settled == true)
        #expect(report.names == expected, "unexpected: \(report.names.subtracting(expected).sorted()); not reported: \(expected.subtracting(report.names).sorted())")
        #expect(report.region(ap)?["sample_sessions"].flatMap { $0 as? [String] }?.contains(unseen) == true, "\(divergent.output)")
        #expect(report.region(eu)?["replay_command"] is String, "a replay window for the region that lacks rows: \(divergent.output)")
        #expect(report.region(us)?["resurrected"] as? Int == 1 && report.region(eu)?["only_here"] as? Int == 1)

        // --session: only that session's rows and tombstones.
        let one = try h.verify(["--json", "--session", unseen])
        #expect(one.status == 2, "\(one.output)")
        #expect(try VerifyJSON(one.output).names == unseenExpected, "\(one.output)")

        let text = try h.verify([])
        #expect(text.status == 2 && text.output.contains("verify: DIVERGENT") && text.output.contains("\(ap) stale message \(edited[0]!)"), "\(text.output)")

        // --repair --dry-run: says what it would write, writes nothing.
        let before = try h.regions.map { try h.fullRows($0) + h.bookkeeping($0) }
        let dry = try h.verify(["--repair", "--dry-run"])
        #expect(dry.status == 2 && dry.output.contains("(dry run: nothing written)"), "\(dry.output)")
        #expect(try h.regions.map { try h.fullRows($0) + h.bookkeeping($0) } == before, "a dry run changed a region")

        let repair = try h.verify(["--repair"])
        #expect(repair.status == 0, "\(repair.output)")
        #expect(repair.output.contains("repair \(ap): wrote") && repair.output.contains("repair \(us): wrote"), "\(repair.output)")
        let again = try h.verify(["--json"])
        #expect(again.status == 0, "\(again.output)")
        #expect(try VerifyJSON(again.output).consistent == true)
        // The winners everywhere: the lonely row in all three, the resurrected one nowhere.
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE message_id = $1", [lonely])[0][0] == "1", "\(r)")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE message_id = $1", [tomb[0]])[0][0] == "0", "\(r)")
            #expect(try h.dbs.query(r, "SELECT version FROM messages WHERE message_id = $1", [edited[0]])[0][0] == edited[1], "\(r)")
        }
        #expect(try h.rows(us) == h.rows(eu) && h.rows(eu) == h.rows(ap))
    }

    @Test("Events in flight are no divergence: candidates are re-checked once every region has applied what the topic held; a region that never catches up is named")
    func inFlightIsNotDivergent() throws {
        let h = try Harness(maxBatchEvents: 200)
        let late = "ap-southeast-1"
        var w = Workload(origins: Self.regions, seed: 62)
        w.generate(sessions: 20, messages: 800)
        // The late region's daemon is not running: it falls behind.
        let first = try Daemon(["run", "--config", try h.configWithout(late)], logPath: h.dir + "/daemon-two.log", environment: Self.everywhere)
        h.daemons.append(first)
        try h.cluster.produce(w.events)
        for r in ["us-east-1", "eu-west-1"] { try h.waitCaughtUp(r) }

        // It never catches up within the settle timeout: named, and the divergences reported.
        let stuck = try h.verify(["--json", "--settle-timeout", "2"])
        #expect(stuck.status == 2, "\(stuck.output)")
        let stuckReport = try VerifyJSON(stuck.output)
        #expect(stuckReport.settled == false)
        #expect((stuckReport.region(late)?["lagging"] as? String)?.contains("events behind") == true, "\(stuck.output)")

        // It catches up while verify waits: the first pass's candidates converge, exit 0.
        let verify = try Daemon(["verify", "--config", h.configPath, "--json", "--settle-timeout", "120"], logPath: h.dir + "/verify.log")
        try waitUntil("verify to wait for the late region's stored offsets", timeout: .seconds(60)) {
            !(try h.dbs.query(late, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'region-replicator verify' AND query LIKE '%replicator_offsets%'").isEmpty)
                || !verify.isRunning
        }
        // The whole daemon takes over (the first one holds the same HTTP port).
        first.signal(SIGTERM)
        #expect(try first.wait() == 0)
        try h.startDaemon(environment: Self.everywhere)
        let status = try verify.wait(timeout: .seconds(150))
        #expect(status == 0, "\(verify.log)")
        let report = try VerifyJSON(verify.log)
        #expect(report.consistent == true && report.settled == true)
        #expect((report.json["candidates"] as? Int ?? 0) > 0, "the first pass saw the late region's missing rows: \(verify.log)")
    }

    @Test("Continuous verification in the daemon: a planted divergence shows in region_replicator_divergent_rows, full passes are timestamped, a repair clears it")
    func continuousVerification() throws {
        let port = try HTTPProbe.freePort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: """
            verify:
              enabled: true
              interval_seconds: 1
              slices: 3
            http:
              listen: "127.0.0.1:\(port)"

            """)
        var w = Workload(origins: Self.regions, seed: 63)
        w.generate(sessions: 10, messages: 300)
        try h.startDaemon(environment: Self.everywhere)
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        let endpoint = DaemonEndpoint(port: port)
        let divergent = #"region_replicator_divergent_rows{region="eu-west-1"}"#
        let lastPass = "region_replicator_verify_last_full_pass_timestamp_seconds"
        try waitUntil("a full pass with nothing divergent", timeout: .seconds(60)) {
            let m = try endpoint.metrics()
            return (m[lastPass] ?? 0) > 0 && m[divergent] == 0
        }
        let victim = try #require(try h.dbs.query("eu-west-1", "SELECT message_id::text FROM messages ORDER BY message_id LIMIT 1").first?[0])
        _ = try h.dbs.query("eu-west-1", "DELETE FROM messages WHERE message_id = $1", [victim])
        try waitUntil("the missing row to show in \(divergent)", timeout: .seconds(60)) { try endpoint.metrics()[divergent] == 1 }
        #expect(try endpoint.metrics()[#"region_replicator_divergent_rows{region="us-east-1"}"#] == 0)
        #expect(h.daemonLogs().contains("regions diverge"), "the daemon logs the divergence")
        let repair = try h.verify(["--repair"])
        #expect(repair.status == 0, "\(repair.output)")
        try waitUntil("\(divergent) back to 0 after the repair", timeout: .seconds(60)) { try endpoint.metrics()[divergent] == 0 }
    }

    @Test("verify exit codes: 78 unknown region, 64 usage, 69 a region unreachable")
    func exitCodes() throws {
        let h = try Harness()
        #expect(try h.verify(["--region", "mars-1", "--region", "us-east-1"]).status == 78)
        #expect(try h.verify(["--dry-run"]).status == 64)
        #expect(try h.verify(["--region", "us-east-1"]).status == 64)
        let text = try String(contentsOfFile: h.configPath, encoding: .utf8)
        let bad = h.dir + "/bad-region.yaml"
        try text.replacingOccurrences(of: h.dbs.conninfo("eu-west-1"), with: "host=127.0.0.1 port=1 dbname=x user=postgres password=hunter2 connect_timeout=2")
            .write(toFile: bad, atomically: true, encoding: .utf8)
        let down = try runReplicator(["verify", "--config", bad])
        #expect(down.status == 69 && down.output.contains("eu-west-1") && !down.output.contains("hunter2"), "\(down.output)")
    }
}

extension Harness {
    /// Runs `region-replicator verify --config <this harness's config> <arguments>`.
    func verify(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runReplicator(["verify", "--config", configPath] + arguments, timeout: .seconds(300))
    }
}

/// `verify --json` output, parsed.
struct VerifyJSON {
    let json: [String: Any]

    init(_ output: String) throws {
        // The JSON document is the output from its first "{" (a log line may precede it).
        guard let start = output.firstIndex(of: "{"),
              let object = try JSONSerialization.jsonObject(with: Data(output[start...].utf8)) as? [String: Any] else {
            throw TestSetupError("not a verify JSON report: \(output)")
        }
        json = object
    }

    var consistent: Bool? { json["consistent"] as? Bool }
    var settled: Bool? { json["settled"] as? Bool }

    func region(_ name: String) -> [String: Any]? {
        (json["regions"] as? [[String: Any]])?.first { $0["region"] as? String == name }
    }

    /// `region|kind|message id` (or the session id, for session tombstones) of every divergence.
    var names: Set<String> {
        Set((json["divergences"] as? [[String: Any]] ?? []).map { d in
            "\(d["region"] as? String ?? "?")|\(d["kind"] as? String ?? "?")|\(d["message_id"] as? String ?? d["session_id"] as? String ?? "?")"
        })
    }
}
