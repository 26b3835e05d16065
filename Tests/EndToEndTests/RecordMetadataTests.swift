import Foundation
import KafkaClient
import Testing

/// Hostile record *metadata* through a real broker (a standalone `rr-devtool broker` process) to
/// a running daemon: Kafka timestamps in nanoseconds, 2^62, Int64.max, 0, negative, far past and
/// far future; absent, empty, binary and large keys; many, large, null and repeated headers. The
/// daemon stays up, applies every one of those records and the records after them, and `/lag`
/// stays truthful throughout (docs/events.md, "Record metadata").
@Suite("Hostile record metadata end to end", .serialized)
struct RecordMetadataTests {
    static let bound = 600.0  // no lag_seconds of these tests can truthfully exceed this

    /// `/lag` read every call; remembers every lag_seconds that is negative, non-finite or
    /// beyond ``bound``.
    final class LagWatch {
        let endpoint: DaemonEndpoint
        var absurd: [String] = []
        var reads = 0
        init(_ endpoint: DaemonEndpoint) { self.endpoint = endpoint }

        @discardableResult
        func read() throws -> [String: [String: Any]] {
            let lag = try endpoint.lag()
            reads += 1
            for (region, body) in lag {
                let s = body.double("lag_seconds") ?? .nan
                if !(s >= 0 && s <= RecordMetadataTests.bound) { absurd.append("\(region): lag_seconds \(s)") }
            }
            return lag
        }
    }

    @Test("Timestamps in ns, 2^62, Int64.max, 0, negative, far past and future; hostile keys and headers: the daemon stays up, applies them and what follows; /lag stays sane")
    func hostileMetadataApplies() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 50, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n", standaloneBroker: true)
        let watch = LagWatch(DaemonEndpoint(port: port))
        var w = Workload(origins: h.regions, seed: 71)
        w.generate(sessions: 10, messages: 200)
        let hostile = HostileMetadata.records(tag: "e2e", partitions: h.cluster.partitions)
        let daemon = try h.startDaemon()
        try waitUntil("the daemon to answer /lag") { (try? watch.read()) != nil }

        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        try caughtUp(h, daemon, watch, "the first half of the workload")
        // Six partitions, each ending in a record stamped ns-scale, 2^62, Int64.max, 0, negative
        // and 1 ms: each the last of its batch, so the stored progress carries its timestamp.
        let stamped = Array(hostile.prefix(h.cluster.partitions))
        try HostileMetadata.produce(stamped, topic: h.cluster.topic, with: h.cluster.producer)
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try caughtUp(h, daemon, watch, "the records stamped \(stamped.map(\.what))")
        for region in h.regions {
            let stored = try h.dbs.query(region, """
                SELECT partition, coalesce((extract(epoch FROM last_record_at) * 1000)::bigint::text, 'NULL')
                FROM replicator_offsets ORDER BY partition
                """)
            let got = Dictionary(uniqueKeysWithValues: stored.map { (Int32($0[0]!)!, $0[1]!) })
            for r in stamped {
                let want: String
                switch r.timestampMs {
                case let ms? where ms >= 0 && ms <= 253_402_300_799_999 && ms != 0: want = String(ms)
                case 0?: want = got[r.partition] == "NULL" ? "a time" : got[r.partition]!  // librdkafka stamps now
                default: want = "NULL"
                }
                #expect(got[r.partition] == want, "region \(region), \(r.what): last_record_at \(got[r.partition] ?? "-"), want \(want)")
            }
        }
        // The rest, and the records after them.
        try HostileMetadata.produce(Array(hostile.dropFirst(h.cluster.partitions)), topic: h.cluster.topic, with: h.cluster.producer)
        try h.cluster.produce(Array(w.events[half...]))

        // The premise: the broker hands those timestamps back as sent.
        let seen = try Self.consumedTimestamps(h.cluster, sessions: Set(hostile.compactMap(\.session)))
        for r in hostile where r.session != nil {
            let got = seen[r.session!] ?? nil
            switch r.timestampMs {
            case 0?, nil: #expect(got.map { abs($0 - Int64(Date().timeIntervalSince1970 * 1000)) < 600_000 } == true, "\(r.what): \(String(describing: got))")
            case let ms? where ms < 0: #expect(got == nil, "\(r.what): consumed with timestamp \(String(describing: got))")
            case let ms?: #expect(got == ms, "\(r.what): sent \(ms), consumed \(String(describing: got))")
            }
        }
        try caughtUp(h, daemon, watch, "every hostile record and the second half of the workload")

        // Every hostile-metadata event applied in every region; the workload as the model says.
        for region in h.regions {
            let rows = try h.dbs.query(region, "SELECT session_id, content FROM messages WHERE region = $1", [HostileMetadata.origin])
            let got = Set(rows.map { "\($0[0] ?? "")|\($0[1] ?? "")" })
            for r in hostile where r.session != nil {
                #expect(got.contains("\(r.session!)|\(r.content!)"), "region \(region): the record with \(r.what) did not apply")
            }
            #expect(rows.count == hostile.filter { $0.session != nil }.count, "region \(region): \(rows.count) rows")
            let modelRows = try h.rows(region).filter { !$0.sessionID.hasPrefix("meta-") }
            #expect(modelRows == w.expectedRows(in: region), "region \(region): the workload around them differs from the model")
            let dead = try h.dbs.query(region, "SELECT length(record_key), get_byte(record_key, 0), error FROM replicator_dead_letters")
            #expect(dead.count == 1 && dead.first?[0] == "65536" && dead.first?[1] == "254"
                    && dead.first?[2]?.hasPrefix("invalid_json: ") == true, "region \(region): dead letters \(dead)")
        }

        // A partition whose last applied record carries an out-of-range timestamp: no
        // last_record_at rather than an invented one; /lag at 0 everywhere.
        try h.cluster.producer.produce(topic: h.cluster.topic, partition: 0, key: Array("last".utf8),
                                       value: HostileMetadata.event(session: "meta-e2e-last", content: "last"),
                                       timestampMs: HostileMetadata.timestamps(nowMs: 1_800_000_000_000)[0].ms)
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try caughtUp(h, daemon, watch, "a last record stamped in nanoseconds")
        for region in h.regions {
            let at = try h.dbs.query(region, "SELECT last_record_at IS NULL FROM replicator_offsets WHERE partition = 0")
            #expect(at.first?[0] == "t", "region \(region): last_record_at of partition 0: \(at)")
        }
        try waitUntil("lag 0 in every region") {
            let lag = try watch.read()
            return h.regions.allSatisfy { lag[$0]?.int("lag_events") == 0 && lag[$0]?.double("lag_seconds") == 0 }
        }
        #expect(watch.absurd.isEmpty, "lag_seconds out of [0, \(Self.bound)] in \(watch.absurd.count) of \(watch.reads) reads: \(watch.absurd.prefix(5))")
        #expect(try watch.endpoint.get("/health/live").status == 200)
        daemon.signal(SIGTERM)
        #expect(try daemon.wait() == 0)
    }

    @Test("A region behind whose oldest unapplied record is stamped ten years ahead: lag_seconds positive, growing with wall time, bounded; 0 once applied")
    func futureStampKeepsLagTruthful() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n", standaloneBroker: true)
        let watch = LagWatch(DaemonEndpoint(port: port))
        try h.startDaemon()
        var w = Workload(origins: h.regions, seed: 72)
        w.generate(sessions: 5, messages: 30)
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        let victim = h.regions[1]
        let freeze = try LagTests.OffsetsFreeze(h, victim)
        var released = false
        defer { if !released { try? freeze.release() } }

        // The partition's next record is stamped ten years ahead; two ordinary ones follow.
        let future = Int64(Date().timeIntervalSince1970 * 1000) + 315_360_000_000
        for (i, ts) in [future, 0, 0].enumerated() {
            try h.cluster.producer.produce(topic: h.cluster.topic, partition: 0, key: Array("future".utf8),
                                           value: HostileMetadata.event(session: "meta-future-\(i)", content: "future \(i)"),
                                           timestampMs: ts)
        }
        try h.cluster.producer.flush(timeoutMs: 30_000)
        for r in h.regions where r != victim { try h.waitCaughtUp(r) }
        var first = 0.0
        var last: [String: Any] = [:]
        do {
            try waitUntil("\(victim) to lag 3 events with a positive lag_seconds") {
                last = try watch.read()[victim] ?? [:]
                first = last.double("lag_seconds") ?? 0
                return last.int("lag_events") == 3 && first > 0
            }
        } catch {
            Issue.record("\(error); /lag of \(victim) last read: lag_events \(last["lag_events"] ?? "-"), lag_seconds \(last["lag_seconds"] ?? "-"), replicated_through \(last["replicated_through"] ?? "-")")
            throw error
        }
        let start = ContinuousClock.now
        var drops: [String] = []
        var previous = first
        try waitUntil("3 s of samples", timeout: .seconds(10)) {
            let v = try watch.read()[victim]?.double("lag_seconds") ?? 0
            if v < previous - 0.01 { drops.append("\(previous) → \(v)") }
            previous = v
            return ContinuousClock.now - start >= .seconds(3)
        }
        #expect(previous - first >= 2, "lag_seconds of \(victim) went from \(first) to \(previous) over 3 s")
        #expect(drops.isEmpty, "lag_seconds of \(victim) went down while nothing applied: \(drops)")

        try freeze.release()
        released = true
        try h.waitCaughtUp(victim)
        try waitUntil("lag 0 in every region") {
            let lag = try watch.read()
            return h.regions.allSatisfy { lag[$0]?.int("lag_events") == 0 && lag[$0]?.double("lag_seconds") == 0 }
        }
        #expect(watch.absurd.isEmpty, "lag_seconds out of [0, \(Self.bound)]: \(watch.absurd.prefix(5))")
    }

    @Test("MetadataFuzzer (an ordinary build: the replay tool) runs its seed scripts and 3,000 pseudo-random ones without a failed check")
    func metadataFuzzerSeeds() throws {
        let tool = TestEnvironment.binDir + "/MetadataFuzzer"
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Fuzz/metadata-corpus").path
        let seeds = try TestEnvironment.run(tool, [corpus])
        #expect(seeds.components(separatedBy: ": ok").count - 1 == (try FileManager.default.contentsOfDirectory(atPath: corpus)).count, "\(seeds)")
        #expect(try TestEnvironment.run(tool, ["--random", "3000"]).contains("3000 random scripts: ok"))
    }

    /// Waits until every region stores the high watermarks, reading `/lag` meanwhile; fails
    /// with the end of the daemon's log when it exits or the wait times out.
    func caughtUp(_ h: Harness, _ daemon: Daemon, _ watch: LagWatch, _ what: String,
                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        do {
            try waitUntil("every region to apply \(what)", timeout: .seconds(120)) {
                _ = try? watch.read()
                guard daemon.isRunning else { throw TestSetupError("the daemon exited (status \((try? daemon.wait()) ?? -1))") }
                let high = try h.cluster.highWatermarks().filter { $0.value > 0 }
                return try h.regions.allSatisfy { r in
                    let stored = try h.storedOffsets(r)
                    return high.allSatisfy { stored[$0.key] == $0.value }
                }
            }
        } catch {
            Issue.record("\(error); \(Self.crash(in: daemon.log) ?? "the daemon's log ends: \(daemon.log.suffix(2500))")",
                         sourceLocation: sourceLocation)
            throw error
        }
    }

    /// The lines of a Swift crash report in `log` that say what and where (nil: no crash).
    static func crash(in log: String) -> String? {
        let lines = log.split(separator: "\n").map(String.init)
        guard let i = lines.firstIndex(where: { $0.contains("Swift runtime failure") || $0.contains("Fatal error") }) else { return nil }
        let frames = lines[i...].filter { $0.contains(" at /") && !$0.contains("/checkouts/") }.prefix(2)
        return "the daemon crashed: " + ([lines[i]] + frames).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " | ")
    }

    /// The Kafka timestamp each of `sessions`' records is consumed with (nil: none), read back
    /// by a group-less consumer from the start of every partition.
    static func consumedTimestamps(_ cluster: TestCluster, sessions: Set<String>) throws -> [String: Int64?] {
        let consumer = try KafkaConsumer(configuration: KafkaConfiguration([("bootstrap.servers", cluster.bootstrap), ("log_level", "3")]),
                                         groupID: nil)
        defer { consumer.close() }
        try consumer.assign((0..<Int32(cluster.partitions)).map {
            TopicPartitionOffset(topic: cluster.topic, partition: $0, offset: TopicPartitionOffset.beginning)
        })
        var out: [String: Int64?] = [:]
        try waitUntil("every hostile record to be consumed back (\(sessions.count))", timeout: .seconds(60), interval: .milliseconds(1)) {
            for result in consumer.pollBatch(maxRecords: 500, timeoutMs: 200) {
                guard case .record(let r) = result, let v = r.value,
                      let json = try? JSONSerialization.jsonObject(with: Data(v)) as? [String: Any],
                      let s = json["session_id"] as? String, sessions.contains(s) else { continue }
                out[s] = .some(r.timestampMs)
            }
            return out.count == sessions.count
        }
        return out
    }
}
