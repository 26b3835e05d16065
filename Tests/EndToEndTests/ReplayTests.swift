import Foundation
import Testing

/// End-to-end tests of `region-replicator replay` and `dead-letters` (docs/operations.md): the real binary,
/// the mock Kafka cluster, one real Postgres per region.
@Suite("Replay and dead letters end to end", .serialized)
struct ReplayTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    /// A caught-up harness with a shuffled workload, the daemon stopped.
    func caughtUp(seed: UInt64, messages: Int = 1500, maxBatchEvents: Int = 500) throws -> (Harness, Workload) {
        let h = try Harness(maxBatchEvents: maxBatchEvents)
        var w = Workload(origins: Self.regions, seed: seed)
        w.generate(sessions: 30, messages: messages)
        w.shuffle()
        let d = try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        d.signal(SIGTERM)
        #expect(try d.wait() == 0)
        try expectRegionsMatchModel(h, w)
        return (h, w)
    }

    // MARK: - 1

    @Test("500 rows deleted from one region: replay from offset 0 restores it; other regions untouched; counts add up")
    func replayRestoresDeletedRows() throws {
        let (h, w) = try caughtUp(seed: 51)
        let target = "eu-west-1"
        let others = h.regions.filter { $0 != target }
        _ = try h.dbs.query(target, "DELETE FROM messages WHERE message_id IN (SELECT message_id FROM messages ORDER BY message_id LIMIT 500)")
        #expect(try h.rows(target).count == w.expectedRows(in: target).count - 500)
        let before = try others.map { try h.fullRows($0) }
        let othersBookkeeping = try others.map { try h.bookkeeping($0) }
        let offsetsBefore = try h.storedOffsets(target)

        let (status, output) = try h.replay(["--region", target, "--from-offset", "0"])
        #expect(status == 0, "replay failed: \(output)")
        let counts = try #require(ReplayCounts(output: output, region: target), "no summary line in: \(output)")
        let records = try h.recordCount()
        #expect(counts.read == records, "read \(counts.read) of \(records) records")
        #expect(counts.total == counts.read, "the outcomes add up to the records read: \(counts)")
        #expect(counts.applied >= 500, "the deleted rows were applied again: \(counts)")
        #expect(counts.skippedOrigin > 0 && counts.duplicate + counts.stale > 0, "\(counts)")
        #expect(!counts.dryRun)
        try expectRegionsMatchModel(h, w)
        #expect(try others.map { try h.fullRows($0) } == before, "other regions' rows changed")
        #expect(try others.map { try h.bookkeeping($0) } == othersBookkeeping, "other regions' bookkeeping changed")
        #expect(try h.storedOffsets(target) == offsetsBefore, "replay must not move the region's offsets")

        // A second replay changes nothing at all.
        let snapshot = try h.fullRows(target)
        let again = try h.replay(["--region", target, "--from-offset", "0"])
        #expect(again.status == 0)
        #expect(ReplayCounts(output: again.output, region: target)?.applied == 0, "\(again.output)")
        #expect(try h.fullRows(target) == snapshot)
    }

    // MARK: - 2

    @Test("Replaying an older range after newer edits and deletions: nothing regresses or resurrects")
    func olderRangeDoesNotRegress() throws {
        let h = try Harness(maxBatchEvents: 100)
        var w = Workload(origins: Self.regions, seed: 52)
        w.generate(sessions: 25, messages: 1200)
        // Older range: first versions only; newer range: edits, message and session deletions.
        func isFirstVersion(_ e: Workload.Event) -> Bool {
            e.json["type"] == nil || ((e.json["type"] as? String) == "message.upserted" && (e.json["version"] as? Int) == 1)
        }
        let older = w.events.filter(isFirstVersion)
        let newer = w.events.filter { !isFirstVersion($0) }
        #expect(newer.count > 100, "the workload has edits and deletions")
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 3_600_000
        let split = base + 1_800_000
        for (i, e) in older.enumerated() {
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array(e.key.utf8),
                                           value: Array(try JSONSerialization.data(withJSONObject: e.json)), timestampMs: base + Int64(i))
        }
        for (i, e) in newer.enumerated() {
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array(e.key.utf8),
                                           value: Array(try JSONSerialization.data(withJSONObject: e.json)), timestampMs: split + Int64(i))
        }
        try h.cluster.producer.flush(timeoutMs: 60_000)
        let d = try h.startDaemon()
        try h.waitAllCaughtUp()
        d.signal(SIGTERM)
        #expect(try d.wait() == 0)
        try expectRegionsMatchModel(h, w)
        let before = try h.regions.map { try h.fullRows($0) }

        let to = Self.rfc3339(ms: split)
        for r in h.regions {
            let (status, output) = try h.replay(["--region", r, "--from-offset", "0", "--to-time", to])
            #expect(status == 0, "\(output)")
            let counts = try #require(ReplayCounts(output: output, region: r), "\(output)")
            #expect(counts.read == older.count, "the older range is the first versions: \(counts) vs \(older.count)")
            #expect(counts.applied == 0, "an older range must apply nothing: \(counts)")
        }
        // One partition by offset too.
        let marks = try h.cluster.highWatermarks()
        let (status, output) = try h.replay(["--region", "eu-west-1", "--partition", "2", "--from-offset", "0", "--to-offset", String(marks[2]! / 2)])
        #expect(status == 0, "\(output)")
        #expect(ReplayCounts(output: output, region: "eu-west-1")?.read == Int(marks[2]! / 2), "\(output)")

        #expect(try h.regions.map { try h.fullRows($0) } == before, "rows changed (regressed, resurrected or rewritten)")
        try expectRegionsMatchModel(h, w)
    }

    // MARK: - 3

    @Test("--dry-run writes nothing and reports the classification the real run then performs")
    func dryRunWritesNothing() throws {
        let (h, w) = try caughtUp(seed: 53, maxBatchEvents: 100)
        let target = "ap-southeast-1"
        try h.cluster.produceRaw(key: "poison", value: Array("not json".utf8))
        try h.cluster.producer.flush(timeoutMs: 10_000)
        // Rows and tombstones gone (a restore from an old backup, say).
        _ = try h.dbs.query(target, "DELETE FROM messages WHERE message_id IN (SELECT message_id FROM messages ORDER BY message_id LIMIT 300)")
        _ = try h.dbs.query(target, "DELETE FROM replicator_message_tombstones WHERE message_id IN (SELECT message_id FROM replicator_message_tombstones ORDER BY message_id LIMIT 20)")
        let rowsBefore = try h.fullRows(target)
        let bookkeepingBefore = try h.bookkeeping(target)

        let dry = try h.replay(["--region", target, "--from-offset", "0", "--dry-run"])
        #expect(dry.status == 0, "\(dry.output)")
        let dryCounts = try #require(ReplayCounts(output: dry.output, region: target), "\(dry.output)")
        #expect(dryCounts.dryRun)
        #expect(try h.fullRows(target) == rowsBefore, "a dry run changed rows")
        #expect(try h.bookkeeping(target) == bookkeepingBefore, "a dry run changed offsets, tombstones or dead letters")
        #expect(dryCounts.applied >= 300 && dryCounts.deadLettered == 1, "\(dryCounts)")

        let real = try h.replay(["--region", target, "--from-offset", "0"])
        #expect(real.status == 0, "\(real.output)")
        let realCounts = try #require(ReplayCounts(output: real.output, region: target), "\(real.output)")
        #expect(!realCounts.dryRun)
        #expect(dryCounts.classification == realCounts.classification, "dry run \(dryCounts) vs real \(realCounts)")
        try expectRegionsMatchModel(h, w, regions: [target])
    }

    // MARK: - 4

    @Test("A new, empty region backfilled by migrate + replay from offset 0 equals the model")
    func newRegionBackfill() throws {
        let h = try Harness()
        let newRegion = "ap-southeast-1"
        // The new region did not exist while the history was written: no tables, no daemon.
        _ = try h.dbs.query(newRegion, "DROP TABLE messages, replicator_offsets, replicator_message_tombstones, replicator_session_tombstones, replicator_dead_letters")
        var w = Workload(origins: ["us-east-1", "eu-west-1"], seed: 54)
        w.generate(sessions: 30, messages: 1500)
        w.shuffle()
        let d = try Daemon(["run", "--config", try h.configWithout(newRegion)], logPath: h.dir + "/daemon-old.log")
        h.daemons.append(d)
        try h.cluster.produce(w.events)
        for r in ["us-east-1", "eu-west-1"] { try h.waitCaughtUp(r) }

        let migrate = try runReplicator(["migrate", "--config", h.configPath, "--region", newRegion])
        #expect(migrate.status == 0, "\(migrate.output)")
        #expect(try h.rows(newRegion).isEmpty)
        let (status, output) = try h.replay(["--region", newRegion, "--from-offset", "0"])
        #expect(status == 0, "\(output)")
        let counts = try #require(ReplayCounts(output: output, region: newRegion), "\(output)")
        #expect(counts.read == (try h.recordCount()) && counts.total == counts.read, "\(counts)")
        try expectRegionsMatchModel(h, w)
        #expect(try h.rows(newRegion).count > 1000)
    }

    // MARK: - 5

    @Test("--from-time selects exactly the records at or after T (mock cluster: the timestamp fallback, announced)")
    func fromTimeSelectsByTimestamp() throws {
        let h = try Harness(maxBatchEvents: 50)
        var rng = SplitMix64(seed: 55)
        let base = Int64(Date().timeIntervalSince1970 * 1000) - 7_200_000
        let t = base + 3_600_000
        var expected: Set<String> = []
        var inWindow: Set<String> = []
        let windowEnd = t + 600_000
        for i in 0..<600 {
            // Timestamps interleave within each partition: selection is by timestamp, not position.
            let ts = i == 0 ? t : i == 1 ? t - 1 : base + Int64(rng.next() % 7_200_000)
            let content = "m-\(i)"
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array("s-\(i % 40)".utf8),
                                           value: upsertEvent(id: UUID().uuidString.lowercased(), session: "s-\(i % 40)",
                                                              content: content, origin: "us-east-1"),
                                           timestampMs: ts)
            if ts >= t { expected.insert(content) }
            if ts >= t && ts < windowEnd { inWindow.insert(content) }
        }
        try h.cluster.producer.flush(timeoutMs: 60_000)
        #expect(expected.contains("m-0") && !expected.contains("m-1"))

        let from = Self.rfc3339(ms: t)
        let (status, output) = try h.replay(["--region", "eu-west-1", "--from-time", from])
        #expect(status == 0, "\(output)")
        #expect(output.contains("fallback") && output.contains("skipping records older than --from-time"),
                "the output says the timestamp fallback was used: \(output)")
        let counts = try #require(ReplayCounts(output: output, region: "eu-west-1"), "\(output)")
        #expect(counts.read == expected.count && counts.applied == expected.count, "\(counts) vs \(expected.count) records at or after T")
        #expect(output.contains("skipped \(600 - expected.count) records outside the time range"), "\(output)")
        let contents = Set(try h.dbs.query("eu-west-1", "SELECT content FROM messages").compactMap { $0[0] })
        #expect(contents == expected, "\(contents.subtracting(expected).count) extra, \(expected.subtracting(contents).count) missing")

        // A bounded window [T, T + 10 min), dry run into another region.
        let window = try h.replay(["--region", "ap-southeast-1", "--from-time", from, "--to-time", Self.rfc3339(ms: windowEnd), "--dry-run"])
        #expect(window.status == 0, "\(window.output)")
        #expect(ReplayCounts(output: window.output, region: "ap-southeast-1")?.read == inWindow.count, "\(window.output)")
        #expect(try h.rows("ap-southeast-1").isEmpty)
    }

    // MARK: - 6

    @Test("Replay while the daemon runs and events keep flowing: every region equals the model at the end")
    func replayWhileDaemonRuns() throws {
        let h = try Harness(maxBatchEvents: 200)
        var w = Workload(origins: Self.regions, seed: 56)
        w.generate(sessions: 30, messages: 3000)
        w.shuffle()
        try h.startDaemon()
        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        try h.waitAllCaughtUp()
        let deleted = try h.dbs.query("us-east-1", """
            DELETE FROM messages WHERE message_id IN (SELECT message_id FROM messages ORDER BY message_id LIMIT 200)
            RETURNING message_id::text, session_id
            """)
        // The daemon, applying the second half meanwhile, may restore (a later version of) a
        // deleted row or erase its session before the replay gets to it; the others only the
        // replay can bring back.
        let laterMessages = Set(w.events[half...].compactMap { $0.json["message_id"] as? String })
        let laterErasures = Set(w.events[half...].compactMap { e in
            (e.json["type"] as? String) == "session.deleted" ? e.json["session_id"] as? String : nil })
        let onlyReplay = deleted.filter { row in
            !laterMessages.contains(row[0] ?? "") && !laterErasures.contains(row[1] ?? "") }.count
        #expect(deleted.count == 200 && onlyReplay >= 100, "deleted \(deleted.count), \(onlyReplay) untouched by later events")

        let rest: [(key: [UInt8], value: [UInt8])] = try w.events[half...].map { e in
            (Array(e.key.utf8), Array(try JSONSerialization.data(withJSONObject: e.json)))
        }
        let done = DispatchSemaphore(value: 0)
        let producerError = ProducerErrorBox()
        let cluster = h.cluster
        Thread {
            let step = rest.count / 10 + 1
            for start in stride(from: 0, to: rest.count, by: step) {
                do {
                    for r in rest[start..<min(start + step, rest.count)] {
                        try cluster.producer.produce(topic: cluster.topic, key: r.key, value: r.value)
                    }
                    try cluster.producer.flush(timeoutMs: 60_000)
                } catch {
                    producerError.set("\(error)")
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
            done.signal()
        }.start()
        let (status, output) = try h.replay(["--region", "us-east-1", "--from-offset", "0"])
        done.wait()
        #expect(producerError.get() == nil)
        #expect(status == 0, "\(output)")
        let counts = try #require(ReplayCounts(output: output, region: "us-east-1"), "\(output)")
        #expect(counts.total == counts.read && counts.applied >= onlyReplay, "\(counts); \(onlyReplay) rows only the replay restores")
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
    }

    // MARK: - 7

    @Test("A dead letter from a CHECK constraint applies after the constraint is dropped and dead-letters retry runs")
    func deadLetterRetryAfterConstraintDropped() throws {
        let h = try Harness(maxBatchEvents: 50)
        let target = "eu-west-1"
        _ = try h.dbs.query(target, "ALTER TABLE messages ADD CONSTRAINT no_forbidden CHECK (content <> 'forbidden words')")
        var w = Workload(origins: Self.regions, seed: 57)
        w.generate(sessions: 10, messages: 200)
        try h.startDaemon()
        try h.cluster.produce(w.events)
        let forbiddenID = "5f7e9c52-0000-4000-8000-0000000000ff"
        try h.cluster.produceRaw(key: "p-forbidden", value: upsertEvent(id: forbiddenID, session: "p-forbidden", content: "forbidden words", origin: "us-east-1"))
        try h.cluster.produceRaw(key: "p-broken", value: Array("not json\u{1}\nbell\u{7} tab\t é".utf8) + [0xFF])
        try h.cluster.producer.flush(timeoutMs: 10_000)
        try h.waitAllCaughtUp()
        #expect(try h.dbs.query(target, "SELECT count(*) FROM messages WHERE message_id = $1", [forbiddenID])[0][0] == "0")

        // list --json: both, with their errors and escaped previews.
        let list = try h.deadLetters(["list", "--region", target, "--json"])
        #expect(list.status == 0, "\(list.output)")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(list.output.utf8)) as? [[String: Any]], "\(list.output)")
        #expect(entries.count == 2, "\(list.output)")
        let refused = try #require(entries.first { ($0["payload_preview"] as? String)?.contains("forbidden") == true }, "\(list.output)")
        let broken = try #require(entries.first { ($0["payload_preview"] as? String)?.hasPrefix("not json") == true }, "\(list.output)")
        #expect((refused["error"] as? String)?.contains("23514") == true, "\(refused)")
        #expect((refused["resolved"] as? Bool) == false && refused["first_seen"] is String && refused["partition"] is Int && refused["offset"] is Int)
        #expect((broken["payload_preview"] as? String) == #"not json\u{1}\nbell\u{7} tab\t é\xff"#, "\(broken)")
        #expect(((refused["payload_preview"] as? String)?.count ?? 99) <= 80)
        let table = try h.deadLetters(["list", "--region", target])
        #expect(table.status == 0 && table.output.contains("FIRST SEEN") && table.output.contains(#"not json\u{1}\n"#), "\(table.output)")

        // Still refused: retried, the error kept fresh, not resolved.
        let first = try h.deadLetters(["retry", "--region", target])
        #expect(first.status == 0 && first.output.contains("resolved 0, still failing 2"), "\(first.output)")
        #expect(try h.dbs.query(target, "SELECT count(*) FROM replicator_dead_letters WHERE retried_at IS NOT NULL AND NOT resolved")[0][0] == "2")

        _ = try h.dbs.query(target, "ALTER TABLE messages DROP CONSTRAINT no_forbidden")
        let refusedID = try #require(refused["id"] as? Int)
        let retry = try h.deadLetters(["retry", "--region", target, "--id", String(refusedID)])
        #expect(retry.status == 0 && retry.output.contains("resolved 1, still failing 0"), "\(retry.output)")
        #expect(try h.dbs.query(target, "SELECT content FROM messages WHERE message_id = $1", [forbiddenID]).first?[0] == "forbidden words")
        let rows = try h.dbs.query(target, #"SELECT id, resolved, retried_at IS NOT NULL, error FROM replicator_dead_letters ORDER BY id"#)
        #expect(rows.count == 2, "no probe rows left behind: \(rows)")
        #expect(rows.first { $0[0] == String(refusedID) }?[1] == "t")
        #expect(rows.first { $0[0] != String(refusedID) }.map { $0[1] == "f" && $0[2] == "t" && !($0[3] ?? "").isEmpty } == true, "\(rows)")

        // list shows only the unresolved one now; --all both.
        let after = try h.deadLetters(["list", "--region", target, "--json"])
        #expect((try JSONSerialization.jsonObject(with: Data(after.output.utf8)) as? [Any])?.count == 1, "\(after.output)")
        let all = try h.deadLetters(["list", "--region", target, "--json", "--all"])
        #expect((try JSONSerialization.jsonObject(with: Data(all.output.utf8)) as? [Any])?.count == 2, "\(all.output)")
        var expected = w.expectedRows(in: target)
        expected.append(Workload.Row(messageID: forbiddenID, sessionID: "p-forbidden", role: "user", content: "forbidden words",
                                     region: "us-east-1", createdAt: "2026-11-24T10:00:00.000000", version: 1))
        #expect(try h.rows(target) == expected.sorted())
    }

    // MARK: - Ctrl-C

    @Test("SIGINT stops a replay cleanly after the batch in flight and reports what was applied")
    func interruptStopsCleanly() throws {
        let h = try Harness(maxBatchEvents: 2)
        for i in 0..<15000 {
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array("s-\(i % 50)".utf8),
                                           value: upsertEvent(id: UUID().uuidString.lowercased(), session: "s-\(i % 50)",
                                                              content: "m-\(i)", origin: "us-east-1"))
        }
        try h.cluster.producer.flush(timeoutMs: 60_000)
        let replay = try Daemon(["replay", "--config", h.configPath, "--region", "eu-west-1", "--from-offset", "0"],
                                logPath: h.dir + "/replay-interrupted.log")
        try waitUntil("the replay to apply something") {
            Int(try h.dbs.query("eu-west-1", "SELECT count(*) FROM messages")[0][0] ?? "0")! > 0
        }
        replay.signal(SIGINT)
        let status = try replay.wait(timeout: .seconds(30))
        #expect(status == 130, "\(replay.log)")
        let line = try #require(replay.log.split(separator: "\n").last { $0.hasPrefix("replay eu-west-1 (interrupted): read ") }, "\(replay.log)")
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }.suffix(6)
        let applied = numbers[numbers.startIndex + 1]
        let rows = Int(try h.dbs.query("eu-west-1", "SELECT count(*) FROM messages")[0][0] ?? "0")!
        #expect(applied == rows && rows < 15000, "reported \(applied) applied, \(rows) rows in the region: \(line)")
    }

    // MARK: - Command line

    @Test("replay and dead-letters exit codes: 64 usage, 78 unknown region, 69 unreachable")
    func exitCodes() throws {
        let h = try Harness()
        for args in [["--region", "eu-west-1"], ["--region", "eu-west-1", "--from-offset", "0", "--from-time", "2026-11-24T10:00:00Z"],
                     ["--region", "eu-west-1", "--from-time", "yesterday"], ["--region", "eu-west-1", "--from-offset", "5", "--to-offset", "2"],
                     ["--region", "eu-west-1", "--from-offset", "0", "--partition", "99"]] {
            let r = try h.replay(args)
            #expect(r.status == 64, "\(args): \(r.status) \(r.output)")
        }
        #expect(try h.replay(["--region", "mars-1", "--from-offset", "0"]).status == 78)
        #expect(try h.deadLetters(["list", "--region", "mars-1"]).status == 78)
        // Region unreachable.
        let text = try String(contentsOfFile: h.configPath, encoding: .utf8)
        let badRegion = h.dir + "/bad-region.yaml"
        try text.replacingOccurrences(of: h.dbs.conninfo("eu-west-1"), with: "host=127.0.0.1 port=1 dbname=x user=postgres connect_timeout=2")
            .write(toFile: badRegion, atomically: true, encoding: .utf8)
        let down = try h.replay(["--region", "eu-west-1", "--from-offset", "0"], configPath: badRegion)
        #expect(down.status == 69 && down.output.contains("eu-west-1"), "\(down.output)")
        // Kafka unreachable.
        let badKafka = h.dir + "/bad-kafka.yaml"
        try text.replacingOccurrences(of: h.cluster.bootstrap, with: "127.0.0.1:1").write(toFile: badKafka, atomically: true, encoding: .utf8)
        let noKafka = try h.replay(["--region", "eu-west-1", "--from-offset", "0"], configPath: badKafka)
        #expect(noKafka.status == 69, "\(noKafka.output)")
    }

    static func rfc3339(ms: Int64) -> String {
        let seconds = ms / 1000
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec, Int(ms % 1000))
    }
}

/// The background producer's first error.
final class ProducerErrorBox: @unchecked Sendable {
    // @unchecked Sendable: guarded by `lock`.
    private let lock = NSLock()
    private var value: String?
    func set(_ v: String) { lock.lock(); if value == nil { value = v }; lock.unlock() }
    func get() -> String? { lock.lock(); defer { lock.unlock() }; return value }
}
