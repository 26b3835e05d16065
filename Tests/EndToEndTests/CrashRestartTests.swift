import Foundation
import Testing

/// A daemon SIGKILLed and restarted at once, as systemd's `Restart=` does, on the daemon's own
/// consumer-group defaults (no `session.timeout.ms` override): the dead consumers stay members
/// of each region's group until their sessions time out, and the restarted instance gets
/// partitions only then. These tests bound that time; `RR_RESTART_REPORT` (a file) receives the
/// measured figures. librdkafka 2.0.2's mock cluster has no static membership (it ignores
/// `group.instance.id`), so these figures are those of dynamic membership.
/// `RR_RESTART_SESSION_TIMEOUT_MS` sets `session.timeout.ms` (45000 = librdkafka's default,
/// the consumer configuration before the daemon set its own) to measure another setting; the
/// deadlines then do not apply and the test only reports.
@Suite("Crash-restart recovery", .serialized)
struct CrashRestartTests {
    static let sessionOverride = ProcessInfo.processInfo.environment["RR_RESTART_SESSION_TIMEOUT_MS"]
    static var kafkaProperties: [String: String] { sessionOverride.map { ["session.timeout.ms": $0] } ?? [:] }
    /// The deadline of a check: the given one on the daemon's defaults, generous otherwise.
    static func bound(_ d: Duration) -> Duration { sessionOverride == nil ? d : .seconds(300) }

    /// Events flowing while the daemon is killed: enough for the whole test at `rate`.
    static func records(seed: UInt64, seconds: Int, rate: Int) -> (Workload, [RateProducer.Record]) {
        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: seed)
        w.generate(sessions: 50, messages: seconds * rate * 10 / 14)
        w.shuffle()
        let records = w.events.map { e in
            RateProducer.Record(key: e.key, value: Array(try! JSONSerialization.data(withJSONObject: e.json)))
        }
        return (w, records)
    }

    /// Σ of the stored next offsets of every region (a region's sum grows with each applied batch).
    static func appliedSums(_ h: Harness) throws -> [String: Int64] {
        Dictionary(uniqueKeysWithValues: try h.regions.map { ($0, try h.storedOffsets($0).values.reduce(0, +)) })
    }

    /// Waits until every region has applied a batch past `before`; returns the time each took from `since`.
    static func waitFirstBatch(_ h: Harness, after before: [String: Int64], since: ContinuousClock.Instant,
                               timeout: Duration) throws -> [String: Duration] {
        var firstBatch: [String: Duration] = [:]
        try waitUntil("every region to apply a batch after the restart (log: \(h.daemonLogs().suffix(1500)))",
                      timeout: timeout, interval: .milliseconds(100)) {
            let sums = try appliedSums(h)
            for r in h.regions where firstBatch[r] == nil && sums[r]! > before[r]! { firstBatch[r] = ContinuousClock.now - since }
            return firstBatch.count == h.regions.count
        }
        return firstBatch
    }

    static func report(_ line: String) {
        print(line)
        if let path = ProcessInfo.processInfo.environment["RR_RESTART_REPORT"],
           let handle = FileHandle(forWritingAtPath: path) ?? {
               _ = FileManager.default.createFile(atPath: path, contents: nil)
               return FileHandle(forWritingAtPath: path)
           }() {
            handle.seekToEndOfFile()
            handle.write(Data((line + "\n").utf8))
            handle.closeFile()
        }
    }

    @Test("SIGKILL and an immediate restart while events flow: every region applies again within 35 s")
    func oneKill() throws {
        let h = try Harness(maxBatchEvents: 200, kafkaProperties: Self.kafkaProperties)
        let (_, records) = Self.records(seed: 71, seconds: 150, rate: 60)
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 60)
        defer { producer.stop() }
        var daemon = try h.startDaemon()
        try waitUntil("every region to apply events", timeout: .seconds(90)) {
            try Self.appliedSums(h).values.allSatisfy { $0 > 0 }
        }
        // A steady state: the group has settled and every partition is applied.
        try waitUntil("every region to store offsets of every partition", timeout: .seconds(90)) {
            try h.regions.allSatisfy { try h.storedOffsets($0).count == h.cluster.partitions }
        }
        daemon.kill9()
        let before = try Self.appliedSums(h)
        let restartedAt = ContinuousClock.now
        daemon = try h.startDaemon()
        let firstBatch = try Self.waitFirstBatch(h, after: before, since: restartedAt, timeout: Self.bound(.seconds(35)))
        let slowest = firstBatch.values.max()!
        Self.report(String(format: "crash-restart: one SIGKILL + restart → first applied batch in every region after %.1f s (%@)",
                           slowest.seconds, h.regions.map { String(format: "%@ %.1f s", $0, firstBatch[$0]!.seconds) }.joined(separator: ", ")))
        producer.stop()
        #expect(daemon.isRunning)
    }

    @Test("Seven SIGKILLs in two minutes, each followed by a restart: every region gets all its partitions back and applies within 40 s of the last restart; nothing lost")
    func sevenKills() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n", kafkaProperties: Self.kafkaProperties)
        let endpoint = DaemonEndpoint(port: port)
        let (w, records) = Self.records(seed: 72, seconds: 200, rate: 50)
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 50)
        defer { producer.stop() }
        var daemon = try h.startDaemon()
        try waitUntil("every region to apply events", timeout: .seconds(90)) {
            try Self.appliedSums(h).values.allSatisfy { $0 > 0 }
        }
        // Seven kills spread over two minutes (one every 17 s), each followed by a restart.
        let start = ContinuousClock.now
        for i in 0..<7 {
            let due = start.advanced(by: .seconds(17 * i))
            while ContinuousClock.now < due { Thread.sleep(forTimeInterval: 0.1) }
            daemon.kill9()
            daemon = try h.startDaemon()
        }
        let lastRestart = ContinuousClock.now
        let killWindow = lastRestart - start
        let before = try Self.appliedSums(h)
        let all = Set(0..<h.cluster.partitions)
        var assignedAfter: Duration? = nil
        try waitUntil("every region of the restarted daemon to own all \(all.count) partitions (log: \(h.daemonLogs().suffix(1500)))",
                      timeout: Self.bound(.seconds(40)), interval: .milliseconds(100)) {
            guard let owned = try? endpoint.assignedPartitions() else { return false }
            return h.regions.allSatisfy { owned[$0] == all }
        }
        assignedAfter = ContinuousClock.now - lastRestart
        let firstBatch = try Self.waitFirstBatch(h, after: before, since: lastRestart,
                                                 timeout: Self.bound(.seconds(40)) - (ContinuousClock.now - lastRestart))
        let slowest = firstBatch.values.max()!
        Self.report(String(format: "crash-restart: 7 SIGKILLs + restarts in %.0f s → all partitions assigned %.1f s and a batch applied in every region %.1f s after the last restart",
                           killWindow.seconds, assignedAfter!.seconds, slowest.seconds))

        // And nothing lost: the rest of the events, then every region against the model.
        try producer.finish(timeout: .seconds(300))
        try h.waitAllCaughtUp(timeout: .seconds(180))
        try expectRegionsMatchModel(h, w)
        #expect(daemon.isRunning)
    }

    /// Whether a broker fences a second instance with the same id (and the daemon then exits
    /// 78) cannot be tested here: librdkafka 2.0.2's mock cluster ignores `group.instance.id`
    /// (no static members, no FENCED_INSTANCE_ID). This checks that the id reaches librdkafka
    /// (which validates it) and that replication runs with it.
    @Test("kafka.group_instance_id set (through the environment): every region replicates everything")
    func staticMembershipConfigured() throws {
        let h = try Harness(maxBatchEvents: 100)
        var w = Workload(origins: h.regions, seed: 73)
        w.generate(sessions: 10, messages: 200)
        let daemon = try h.startDaemon(environment: ["REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID": "host-a"])
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp(timeout: .seconds(90))
        try expectRegionsMatchModel(h, w)
        #expect(daemon.isRunning)
        #expect(!daemon.log.contains("configuration error"))
    }
}
