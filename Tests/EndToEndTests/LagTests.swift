import Foundation
import KafkaClient
import PostgresClient
import ReplicationCore
import Testing

/// End-to-end: the lag figures, metrics and health of docs/metrics.md, read over HTTP from the
/// real daemon and checked against figures read independently from the broker and the region
/// databases; a real Prometheus server and promtool (Debian package `prometheus`).
/// Serialized: some tests stop a shared Postgres server.
@Suite("Lag, metrics and health over HTTP", .serialized)
struct LagTests {
    static let outcomes = ["applied", "duplicate", "stale", "skipped_origin", "dead_lettered"]

    // MARK: - Helpers

    /// A harness whose daemon serves HTTP on a free loopback port.
    func harness(maxBatchEvents: Int = 500) throws -> (Harness, DaemonEndpoint) {
        let port = try HTTPProbe.freePort()
        let h = try Harness(maxBatchEvents: maxBatchEvents, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n")
        return (h, DaemonEndpoint(port: port))
    }

    func waitReady(_ h: Harness, _ e: DaemonEndpoint, timeout: Duration = .seconds(60)) throws {
        try waitUntil("/health/ready to answer 200 (daemon log: \(h.daemonLogs().suffix(2000)))", timeout: timeout) {
            try e.get("/health/ready").status == 200
        }
    }

    func workload(_ h: Harness, seed: UInt64, messages: Int) -> Workload {
        var w = Workload(origins: h.regions, seed: seed)
        w.generate(sessions: 10, messages: messages, contentPrefix: "s\(seed)-")
        return w
    }

    func series(_ name: String, _ region: String, _ extra: String = "") -> String {
        "\(name){region=\"\(region)\"\(extra)}"
    }

    static func unix(_ rfc3339: Any?) -> Double? {
        (rfc3339 as? String).flatMap { Timestamp(rfc3339: $0) }.map { Double($0.microseconds) / 1e6 }
    }

    // MARK: - 1. promtool check metrics

    @Test("/metrics exports every region × outcome series at 0 from the first scrape and passes `promtool check metrics`")
    func metricsPassPromtool() throws {
        try PrometheusTools.require(PrometheusTools.promtool)
        let (h, e) = try harness()
        try h.startDaemon()
        try waitUntil("/metrics to answer") { try e.get("/metrics").status == 200 }
        let first = try e.metrics()
        for r in h.regions {
            for o in Self.outcomes {
                #expect(first[series("region_replicator_events_total", r, ",outcome=\"\(o)\"")] == 0, "\(r) \(o)")
            }
            for name in ["region_replicator_apply_latency_seconds_count", "region_replicator_batch_duration_seconds_count",
                         "region_replicator_apply_retries_total", "region_replicator_lag_events", "region_replicator_lag_seconds",
                         "region_replicator_region_up", "region_replicator_replicated_through_timestamp_seconds",
                         "region_replicator_last_apply_timestamp_seconds", "region_replicator_lag_sample_timestamp_seconds"] {
                #expect(first[series(name, r)] != nil, "\(name) of \(r) missing from the first scrape")
            }
        }
        #expect(first.keys.contains { $0.hasPrefix("region_replicator_build_info{version=") })

        // With data in every histogram and counter too.
        try waitReady(h, e)
        try h.cluster.produce(workload(h, seed: 11, messages: 150).events)
        try h.waitAllCaughtUp()
        let body = try e.get("/metrics")
        #expect(body.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let file = h.dir + "/metrics.txt"
        try body.body.write(to: URL(fileURLWithPath: file))
        let check = try PrometheusTools.promtool(["check", "metrics"], stdinFile: file)
        #expect(check.status == 0 && check.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
                "promtool check metrics exited \(check.status): \(check.output)")
    }

    // MARK: - 2. A real Prometheus server

    @Test("A Prometheus server on loopback scrapes the daemon: lag_events for every region, and every alert rule evaluates")
    func prometheusScrapes() throws {
        let (h, e) = try harness()
        try h.startDaemon()
        try waitReady(h, e)
        try h.cluster.produce(workload(h, seed: 12, messages: 60).events)
        try h.waitAllCaughtUp()
        let prometheus = try PrometheusServer(scraping: e.port, ruleFiles: [PrometheusTools.packageRoot + "/monitoring/alerts.yml"])
        defer { prometheus.kill() }
        try waitUntil("Prometheus to return region_replicator_lag_events for every region (log: \(prometheus.log.suffix(1500)))",
                      timeout: .seconds(90), interval: .milliseconds(500)) {
            let result = try prometheus.query("region_replicator_lag_events")
            return Set(result.compactMap { $0.labels["region"] }) == Set(h.regions)
                && result.allSatisfy { $0.labels["job"] == "region-replicator" && $0.value == 0 }
        }
        let up = try prometheus.query(#"up{job="region-replicator"}"#)
        #expect(up.count == 1 && up.first?.value == 1)

        // Every rule of monitoring/alerts.yml loads and evaluates against the real series.
        try waitUntil("Prometheus to evaluate every alert rule", timeout: .seconds(30), interval: .milliseconds(500)) {
            let rules = try prometheus.rules()
            return rules.count >= 6 && rules.allSatisfy { $0.health != "unknown" }
        }
        for rule in try prometheus.rules() {
            #expect(rule.health == "ok", "rule \(rule.name): \(rule.health) \(rule.error ?? "")")
        }
        // No alert fires for a healthy daemon.
        #expect(try prometheus.query("ALERTS").filter { $0.labels["alertstate"] == "firing" }.isEmpty)

        // Every query of the Grafana dashboard parses and runs.
        for expr in try GrafanaDashboard.expressions() {
            _ = try prometheus.query(expr)
        }
    }

    // MARK: - 3. lag_events against the broker and the databases

    /// Holds `LOCK TABLE replicator_offsets IN EXCLUSIVE MODE` in one region's database: the
    /// region's apply transactions block before they commit (its stored offsets cannot move),
    /// while plain reads of the table (the daemon's lag monitor, this test) still pass.
    final class OffsetsFreeze {
        let db: PostgresConnection

        init(_ h: Harness, _ region: String) throws {
            db = try h.dbs.connect(region)
            try db.execute("BEGIN; LOCK TABLE replicator_offsets IN EXCLUSIVE MODE")
        }

        func release() throws {
            try db.execute("COMMIT")
            db.close()
        }
    }

    /// Reads Σ(high − next) per region (and per partition) from the broker and the databases,
    /// then waits until `/lag` shows exactly those figures on two successive samples taken after
    /// the reads. Call it only while nothing can move (producer idle, offsets frozen or caught up).
    @discardableResult
    func expectLagMatches(_ h: Harness, _ e: DaemonEndpoint, _ step: String,
                          sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Int64] {
        let high = try h.cluster.highWatermarks()
        var expected: [String: [Int32: (next: Int64, high: Int64, lag: Int64)]] = [:]
        for r in h.regions {
            let stored = try h.storedOffsets(r)
            expected[r] = Dictionary(uniqueKeysWithValues: high.map { p, hw in
                let next = stored[p] ?? 0
                return (p, (next, hw, max(0, hw - next)))
            })
        }
        let readAt = Date().timeIntervalSince1970
        func matches(_ lag: [String: [String: Any]]) -> Bool {
            h.regions.allSatisfy { r in
                guard let region = lag[r], let parts = region["partitions"] as? [[String: Any]],
                      let sampled = Self.unix(region["lag_sample_timestamp"]), sampled > readAt else { return false }
                let want = expected[r]!
                let got = Dictionary(uniqueKeysWithValues: parts.map { p in
                    (Int32(p.int("partition") ?? -1), (next: p.int("next_offset") ?? -1, high: p.int("high_watermark") ?? -1,
                                                       lag: p.int("lag_events") ?? -1))
                })
                return region.int("lag_events") == want.values.reduce(0) { $0 + $1.lag }
                    && got.count == want.count
                    && want.allSatisfy { p, w in got[p].map { $0 == w } ?? false }
            }
        }
        var last: [String: [String: Any]] = [:]
        var matchedAt: Double? = nil
        do {
            try waitUntil("/lag to equal the broker and database figures \(step)", timeout: .seconds(15)) {
                last = try e.lag()
                guard matches(last) else {
                    matchedAt = nil
                    return false
                }
                // Twice in a row, on distinct samples.
                let sampled = h.regions.compactMap { Self.unix(last[$0]?["lag_sample_timestamp"]) }.min() ?? 0
                if let m = matchedAt, sampled > m { return true }
                if matchedAt == nil { matchedAt = sampled }
                return false
            }
        } catch {
            let want = h.regions.map { r in "\(r): \(expected[r]!.sorted { $0.key < $1.key }.map { "p\($0.key) \($0.value.next)/\($0.value.high)" })" }
            let got = h.regions.map { r in "\(r): lag_events \(last[r]?.int("lag_events") ?? -1) \(last[r]?["partitions"] ?? "-")" }
            Issue.record("\(step): /lag does not match the broker and databases.\nexpected \(want)\ngot \(got)", sourceLocation: sourceLocation)
            throw error
        }
        return expected.mapValues { $0.values.reduce(0) { $0 + $1.lag } }
    }

    @Test("lag_events equals Σ(high watermark − stored next offset), read from the broker and each database, at every step of produce → apply")
    func lagEventsMatchBrokerAndDatabases() throws {
        let (h, e) = try harness(maxBatchEvents: 5)
        try h.startDaemon()
        try waitReady(h, e)
        try expectLagMatches(h, e, "on an empty topic")

        // Every region blocked before its next commit; N events produced: each region lags N.
        var freezes = try h.regions.map { try OffsetsFreeze(h, $0) }
        let events = workload(h, seed: 13, messages: 40).events
        try h.cluster.produce(events)
        let blocked = try expectLagMatches(h, e, "with every region blocked after producing \(events.count) events")
        #expect(h.regions.allSatisfy { blocked[$0] == Int64(events.count) }, "\(blocked)")

        // One apply transaction at a time per region (releasing the lock lets the blocked one
        // commit; re-taking it waits for that commit and blocks the next): compare after each.
        var previous = blocked
        var steps = 0
        while previous.values.contains(where: { $0 > 0 }) {
            steps += 1
            try #require(steps <= 60, "regions still lag after 60 steps: \(previous)")
            for i in freezes.indices {
                try freezes[i].release()
                freezes[i] = try OffsetsFreeze(h, h.regions[i])
            }
            let now = try expectLagMatches(h, e, "after apply step \(steps)")
            for r in h.regions { #expect(now[r]! <= previous[r]!, "lag of \(r) grew from \(previous[r]!) to \(now[r]!)") }
            previous = now
        }
        // Several intermediate states were compared (batches of at most 5 events).
        #expect(steps >= 3, "only \(steps) steps")
        for f in freezes { try f.release() }

        // Caught up: 0 everywhere, equal to the stored offsets at the high watermarks.
        try h.waitAllCaughtUp()
        let done = try expectLagMatches(h, e, "after catching up")
        #expect(h.regions.allSatisfy { done[$0] == 0 })
        let lag = try e.lag()
        for r in h.regions { #expect(lag[r]?.double("lag_seconds") == 0, "\(r)") }
    }

    // MARK: - 4. A region's database down

    @Test("A region's Postgres stopped: region_up 0 and /health/ready 503 within 2 s, its lag_seconds grows in real time, the others stay at 0; all recover after restart")
    func regionDown() throws {
        let (h, e) = try harness()
        try h.startDaemon()
        try waitReady(h, e)
        try h.cluster.produce(workload(h, seed: 14, messages: 30).events)
        try h.waitAllCaughtUp()
        let victim = h.regions[1]
        let others = h.regions.filter { $0 != victim }
        let server = h.dbs.server(victim)
        try #require(h.regions.allSatisfy { $0 == victim || h.dbs.server($0).index != server.index },
                     "the regions must be on distinct servers")

        try server.stopImmediately()
        defer { if !server.isRunning { try? server.start() } }
        let stoppedAt = ContinuousClock.now
        try waitUntil("region_up{region=\(victim)} = 0 and /health/ready 503 naming it", timeout: .seconds(2), interval: .milliseconds(50)) {
            guard try e.metrics()[series("region_replicator_region_up", victim)] == 0 else { return false }
            let ready = try e.get("/health/ready")
            guard ready.status == 503, let regions = try ready.json()["regions"] as? [String: String] else { return false }
            return (regions[victim] ?? "ok") != "ok"
        }
        let detection = ContinuousClock.now - stoppedAt
        let ready = try e.get("/health/ready").json()
        let regions = try #require(ready["regions"] as? [String: String])
        #expect(others.allSatisfy { regions[$0] == "ok" }, "\(regions)")
        #expect(ready["kafka"] as? String == "ok")
        #expect(detection < .seconds(2))

        // New events: the others apply them, the victim falls behind.
        let more = workload(h, seed: 15, messages: 5).events
        try h.cluster.produce(more)
        for r in others { try h.waitCaughtUp(r) }
        try waitUntil("\(victim) to lag \(more.count) events with a positive lag_seconds") {
            let lag = try e.lag()
            return lag[victim]?.int("lag_events") == Int64(more.count) && (lag[victim]?.double("lag_seconds") ?? 0) > 0
                && lag[victim]?["up"] as? Bool == false
        }

        // lag_seconds of the victim grows with wall time; the others stay near 0 throughout.
        let start = ContinuousClock.now
        let first = try #require(try e.lag()[victim]?.double("lag_seconds"))
        var maxOther = 0.0
        var samples = 0
        var previous = first
        var drops: [String] = []
        try waitUntil("3 s of samples", timeout: .seconds(10)) {
            let lag = try e.lag()
            for r in others { maxOther = max(maxOther, lag[r]?.double("lag_seconds") ?? .infinity) }
            if let v = lag[victim]?.double("lag_seconds") {
                if v < previous - 0.01 { drops.append("\(previous) → \(v)") }
                previous = v
            }
            samples += 1
            return ContinuousClock.now - start >= .seconds(3)
        }
        let last = try #require(try e.lag()[victim]?.double("lag_seconds"))
        #expect(last - first >= 2, "lag_seconds of \(victim) went from \(first) to \(last) over 3 s")
        #expect(drops.isEmpty, "lag_seconds of the down region \(victim) went down: \(drops)")
        #expect(maxOther < 1, "another region's lag_seconds reached \(maxOther)")
        #expect(samples >= 5)
        let m = try e.metrics()
        #expect((m[series("region_replicator_lag_seconds", victim)] ?? 0) >= last)
        #expect(m[series("region_replicator_lag_events", victim)] == Double(more.count))

        // Back: lag to 0 and ready again.
        try server.start()
        try h.waitCaughtUp(victim)
        try waitUntil("\(victim) back at lag 0 and /health/ready 200", timeout: .seconds(60)) {
            let lag = try e.lag()
            let ready = try e.get("/health/ready").status
            return lag[victim]?.int("lag_events") == 0 && lag[victim]?.double("lag_seconds") == 0
                && lag[victim]?["up"] as? Bool == true && ready == 200
        }
        #expect(try e.metrics()[series("region_replicator_region_up", victim)] == 1)
    }

    // MARK: - 5. Idle topic

    /// The daemon's librdkafka clients, counted by their main threads (`rdk:main`).
    func kafkaClients(_ pid: Int32) -> Int {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.filter {
            (try? String(contentsOfFile: "/proc/\(pid)/task/\($0)/comm", encoding: .utf8))?.hasPrefix("rdk:main") == true
        }.count
    }

    @Test("A lagging region's monitor reads its oldest unapplied record with a Kafka client of its own and closes it once idle: then one client per pipeline plus one for the watermarks")
    func idleClientsClosed() throws {
        let (h, e) = try harness()
        let victim = h.regions[0]
        let server = h.dbs.server(victim)
        try #require(h.regions.allSatisfy { $0 == victim || h.dbs.server($0).index != server.index },
                     "the regions must be on distinct servers")
        // The victim's database is down from the start: its pipeline cannot resolve its stored
        // offsets, so it holds no record, and the monitor must read the oldest one itself.
        try server.stopImmediately()
        defer { if !server.isRunning { try? server.start() } }
        let daemon = try h.startDaemon()
        let more = workload(h, seed: 17, messages: 20).events
        try h.cluster.produce(more)
        try waitUntil("a positive lag_seconds for \(victim)") {
            let lag = try e.lag()
            return lag[victim]?.int("lag_events") == Int64(more.count) && (lag[victim]?.double("lag_seconds") ?? 0) > 0
        }
        // One per pipeline, one for the watermarks, and at least the victim's monitor's own.
        try waitUntil("more than \(h.regions.count + 1) librdkafka clients while \(victim) lags", timeout: .seconds(10)) {
            kafkaClients(daemon.pid) > h.regions.count + 1
        }

        try server.start()
        try h.waitAllCaughtUp()
        try waitReady(h, e)
        try waitUntil("the idle monitor to close its client (after 15 s)", timeout: .seconds(45), interval: .milliseconds(250)) {
            kafkaClients(daemon.pid) == h.regions.count + 1
        }
        // Idle, it stays that way and the figures stay right.
        let lag = try e.lag()
        #expect(h.regions.allSatisfy { lag[$0]?.int("lag_events") == 0 && lag[$0]?.double("lag_seconds") == 0 })
        #expect(kafkaClients(daemon.pid) == h.regions.count + 1)
    }

    @Test("An idle topic after catching up: lag_seconds stays below 1 (and lag_events 0) for 10 s in every region")
    func idleTopic() throws {
        let (h, e) = try harness()
        try h.startDaemon()
        try waitReady(h, e)
        try h.cluster.produce(workload(h, seed: 16, messages: 50).events)
        try h.waitAllCaughtUp()
        try waitUntil("/lag at 0 in every region") {
            let lag = try e.lag()
            return h.regions.allSatisfy { lag[$0]?.int("lag_events") == 0 }
        }
        let start = ContinuousClock.now
        var samples = 0
        var worst: (region: String, seconds: Double, events: Int64) = ("", 0, 0)
        var worstSkew = 0.0  // |now − replicated_through|: it follows the wall clock while idle
        try waitUntil("10 s of idle samples", timeout: .seconds(30), interval: .milliseconds(200)) {
            let lag = try e.lag()
            let metrics = try e.metrics()
            let now = Date().timeIntervalSince1970
            for r in h.regions {
                let seconds = max(lag[r]?.double("lag_seconds") ?? .infinity,
                                  metrics[series("region_replicator_lag_seconds", r)] ?? .infinity)
                let events = max(lag[r]?.int("lag_events") ?? .max, Int64(metrics[series("region_replicator_lag_events", r)] ?? -1))
                if seconds > worst.seconds || events > worst.events { worst = (r, seconds, events) }
                worstSkew = max(worstSkew, abs(now - (Self.unix(lag[r]?["replicated_through"]) ?? 0)))
            }
            samples += 1
            return ContinuousClock.now - start >= .seconds(10)
        }
        #expect(worst.seconds < 1 && worst.events == 0, "worst sample: \(worst)")
        #expect(worstSkew < 1, "replicated_through was \(worstSkew) s from the wall clock")
        #expect(samples >= 20)
    }

    // MARK: - 6. Latency histogram count

    @Test("apply_latency_seconds_count per region equals its events_total{outcome=applied}; every record is counted once")
    func latencyCountEqualsApplied() throws {
        let (h, e) = try harness(maxBatchEvents: 50)
        try h.startDaemon()
        try waitReady(h, e)
        var w = workload(h, seed: 17, messages: 300)
        w.shuffle()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        let total = try h.cluster.highWatermarks().values.reduce(0, +)
        var m: [String: Double] = [:]
        try waitUntil("every record to be counted in every region") {
            m = try e.metrics()
            return h.regions.allSatisfy { r in
                Self.outcomes.map { m[series("region_replicator_events_total", r, ",outcome=\"\($0)\"")] ?? 0 }.reduce(0, +) == Double(total)
            }
        }
        for r in h.regions {
            let applied = m[series("region_replicator_events_total", r, #",outcome="applied""#)] ?? -1
            let count = m[series("region_replicator_apply_latency_seconds_count", r)] ?? -2
            #expect(applied > 0, "\(r): nothing applied")
            #expect(count == applied, "\(r): apply_latency_seconds_count \(count) vs events_total{outcome=applied} \(applied)")
            #expect(m[series("region_replicator_apply_latency_seconds_bucket", r, #",le="+Inf""#)] == count)
            #expect((m[series("region_replicator_batch_duration_seconds_count", r)] ?? 0) > 0)
            #expect((m[series("region_replicator_last_apply_timestamp_seconds", r)] ?? 0) > Date().timeIntervalSince1970 - 600)
        }
    }

    // MARK: - 7. Alert rules

    @Test("monitoring/alerts.yml passes `promtool check rules` and its unit tests (`promtool test rules`)")
    func alertRules() throws {
        let dir = PrometheusTools.packageRoot + "/monitoring"
        let check = try PrometheusTools.promtool(["check", "rules", dir + "/alerts.yml"])
        #expect(check.status == 0, "\(check.output)")
        let test = try PrometheusTools.promtool(["test", "rules", dir + "/alerts_test.yml"])
        #expect(test.status == 0 && test.output.contains("SUCCESS"), "\(test.output)")
        #expect(try GrafanaDashboard.expressions().count >= 5)
    }

    // MARK: - Watermarks: one read for every region, partitions re-read

    /// librdkafka 2.0.2's mock cluster cannot add partitions to a topic (it has no
    /// CreatePartitions): that the count is re-read rests on every read asking the broker's
    /// metadata afresh, which this test checks by the number of broker reads.
    @Test("The topic's watermarks are read once per sample for every region's monitor, every partition's low and high equal to the broker's")
    func sharedWatermarks() throws {
        let cluster = try KafkaMockCluster(brokers: 3)
        try cluster.createTopic("marks", partitions: 5)
        let producer = try KafkaProducer(configuration: KafkaConfiguration([("bootstrap.servers", cluster.bootstrapServers), ("log_level", "3")]))
        let marks = TopicWatermarks(kafka: KafkaConfiguration([("bootstrap.servers", cluster.bootstrapServers), ("log_level", "3")]),
                                    topic: "marks", maxAge: .milliseconds(300))
        defer { marks.close() }
        for p in Int32(0)..<5 {
            for i in 0..<Int(p) { try producer.produce(topic: "marks", partition: p, key: nil, value: Array("r\(i)".utf8)) }
        }
        try producer.flush(timeoutMs: 10_000)
        var sample: TopicWatermarks.Sample? = nil
        try waitUntil("the topic's 5 partitions to be read", timeout: .seconds(20)) {
            sample = try? marks.sample()
            return sample?.high.count == 5
        }
        for p in Int32(0)..<5 {
            let broker = try producer.queryWatermarks(topic: "marks", partition: p, timeoutMs: 5000)
            #expect(sample?.high[p] == broker.high && sample?.low[p] == broker.low, "partition \(p)")
            #expect(sample?.high[p] == Int64(p))
        }

        // Three regions' monitors sampling at once share one broker read.
        Thread.sleep(forTimeInterval: 0.35)  // let the last read age past maxAge
        let before = marks.brokerReads
        DispatchQueue.concurrentPerform(iterations: 3) { _ in _ = try? marks.sample() }
        #expect(marks.brokerReads == before + 1, "\(marks.brokerReads - before) broker reads for three monitors")
        // A later sample reads again (metadata included): nothing is cached past maxAge.
        Thread.sleep(forTimeInterval: 0.35)
        _ = try marks.sample()
        #expect(marks.brokerReads == before + 2)
    }

    // MARK: - Records deleted by retention before they were applied

    @Test("Retention deletes records a blocked region has not applied: /lag shows low_watermark and expired_events (and the metric, and a warning); 0 again once the region is past the gap")
    func expiredRecordsAreReported() throws {
        let (h, e) = try harness()
        try h.startDaemon()
        try waitReady(h, e)
        let victim = h.regions[1]
        let others = h.regions.filter { $0 != victim }

        // The victim cannot commit; partition 0 gets 8 MB (the mock broker keeps about 5 MB a
        // partition, so it deletes the oldest records). Not JSON: the others dead-letter them.
        let freeze = try OffsetsFreeze(h, victim)
        var released = false
        defer { if !released { try? freeze.release() } }
        let big = [UInt8](repeating: UInt8(ascii: "x"), count: 200_000)
        for i in 0..<40 { try h.cluster.producer.produce(topic: h.cluster.topic, partition: 0, key: nil, value: Array("big \(i) ".utf8) + big) }
        try h.cluster.producer.flush(timeoutMs: 60_000)
        let low = try h.cluster.producer.queryWatermarks(topic: h.cluster.topic, partition: 0, timeoutMs: 10_000).low
        try #require(low > 0, "the broker kept every record: nothing expired")
        let stored = try h.storedOffsets(victim)[0] ?? 0
        try #require(stored < low)
        let gap = low - stored

        try waitUntil("/lag of \(victim) to show partition 0's low watermark \(low) and \(gap) expired events", timeout: .seconds(20)) {
            let lag = try e.lag()
            guard let parts = lag[victim]?["partitions"] as? [[String: Any]],
                  let p0 = parts.first(where: { $0.int("partition") == 0 }) else { return false }
            return p0.int("low_watermark") == low && p0.int("expired_events") == gap && lag[victim]?.int("expired_events") == gap
                && others.allSatisfy { lag[$0]?.int("expired_events") == 0 }
        }
        #expect(try e.metrics()[series("region_replicator_expired_events", victim)] == Double(gap))
        #expect(h.daemonLogs().contains("records deleted by retention before this region applied them"))

        // Released: the region passes the gap, and nothing is reported as expired any more.
        try freeze.release()
        released = true
        try h.waitCaughtUp(victim, timeout: .seconds(90))
        try waitUntil("expired_events of \(victim) back to 0") {
            try e.lag()[victim]?.int("expired_events") == 0
        }
        #expect(try e.metrics()[series("region_replicator_expired_events", victim)] == 0)
    }

    // MARK: - status

    @Test("`region-replicator status` prints the table and `--json` the /lag body; 69 when the daemon is unreachable, 78 on a bad config")
    func statusCommand() throws {
        let (h, e) = try harness()
        try h.startDaemon()
        try waitReady(h, e)
        try h.cluster.produce(workload(h, seed: 18, messages: 20).events)
        try h.waitAllCaughtUp()
        try waitUntil("/lag at 0") { try e.lag().values.allSatisfy { $0.int("lag_events") == 0 } }

        let table = try runReplicator(["status", "--config", h.configPath])
        #expect(table.status == 0, "\(table.output)")
        let lines = table.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
                == "REGION UP LAG EVENTS LAG SECONDS REPLICATED THROUGH", "\(table.output)")
        for r in h.regions {
            let row = try #require(lines.first { $0.hasPrefix(r + " ") }, "no row for \(r): \(table.output)")
            let cells = row.split(separator: " ", omittingEmptySubsequences: true)
            #expect(cells.count == 5 && cells[1] == "yes" && cells[2] == "0" && cells[3] == "0.000", "\(row)")
            #expect(Timestamp(rfc3339: cells[4]) != nil, "\(row)")
        }

        let json = try runReplicator(["status", "--url", "http://127.0.0.1:\(e.port)", "--json"])
        #expect(json.status == 0, "\(json.output)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(json.output.utf8)) as? [String: Any])
        #expect(doc["topic"] as? String == h.cluster.topic)
        #expect((doc["regions"] as? [[String: Any]])?.compactMap { $0["region"] as? String } == h.regions)

        let closed = try HTTPProbe.freePort()
        let unreachable = try runReplicator(["status", "--url", "http://127.0.0.1:\(closed)"])
        #expect(unreachable.status == 69, "\(unreachable.output)")
        #expect(unreachable.output.contains("cannot reach the daemon"))

        let badConfig = try runReplicator(["status", "--config", h.dir + "/missing.yaml"])
        #expect(badConfig.status == 78, "\(badConfig.output)")

        let usage = try runReplicator(["status", "--config", h.configPath, "--url", "http://127.0.0.1:\(e.port)"])
        #expect(usage.status == 64, "\(usage.output)")
    }
}

/// The PromQL of monitoring/grafana-dashboard.json, with the dashboard variables filled in.
enum GrafanaDashboard {
    static func expressions() throws -> [String] {
        let path = PrometheusTools.packageRoot + "/monitoring/grafana-dashboard.json"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        let root = try JSONSerialization.jsonObject(with: data)
        var out: [String] = []
        func walk(_ o: Any) {
            if let d = o as? [String: Any] {
                if let expr = d["expr"] as? String, d["refId"] != nil { out.append(expr) }
                d.values.forEach(walk)
            } else if let a = o as? [Any] {
                a.forEach(walk)
            }
        }
        walk(root)
        return out.map {
            $0.replacingOccurrences(of: "$__rate_interval", with: "1m")
                .replacingOccurrences(of: "$__range", with: "5m")
                .replacingOccurrences(of: "$job", with: "region-replicator")
                .replacingOccurrences(of: "$region", with: ".*")
                .replacingOccurrences(of: "$instance", with: ".*")
        }
    }
}
