import Foundation
import Testing

/// Upgrading a group of instances one at a time (docs/operations.md, "Upgrades"): instances
/// restarted one after the other under load, and writers of the builds before bucket locks
/// (which lock by Kafka partition) beside this one.
@Suite("Rolling upgrade: instances restarted one at a time; older builds' partition locks", .serialized)
struct RollingUpgradeTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
    /// The older builds' key of the default table, as their applier computed it.
    static let olderTableKey = "hashtext('region-replicator apply ' || $$messages$$)"

    @Test("Two instances under load, restarted one after the other: every region exact, the lag it costs measured")
    func rollingRestart() throws {
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n")
        var w = Workload(origins: Self.regions, seed: 43)
        w.generate(sessions: 30, messages: 3000)
        w.shuffle()
        var a = try h.startDaemon()
        var b = try h.startInstance(httpPort: portB)
        let (endA, endB) = (DaemonEndpoint(port: portA), DaemonEndpoint(port: portB))
        try h.waitForSplit(endA, endB)

        let producer = try Self.producer(h, w, perSecond: 120)
        defer { producer.stop() }
        try waitUntil("some events applied through every partition of every region") {
            try h.regions.allSatisfy { try h.storedOffsets($0).count == h.cluster.partitions }
        }
        let watch = LagWatch([endA, endB])
        let started = ContinuousClock.now
        // The runbook: stop one instance (a draining stop), start it again, wait until it owns a
        // share of every region again, then the next.
        #expect(producer.produced < producer.total, "the first restart must land mid-stream")
        a.signal(SIGTERM)
        #expect(try a.wait(timeout: .seconds(45)) == 0, "A's draining stop exits 0")
        a = try h.startDaemon()
        try h.waitForSplit(endA, endB, "A back with a share of every region", timeout: .seconds(90))
        let firstBack = ContinuousClock.now - started
        #expect(producer.produced < producer.total, "the second restart must land mid-stream")
        b.signal(SIGTERM)
        #expect(try b.wait(timeout: .seconds(45)) == 0, "B's draining stop exits 0")
        b = try h.startInstance(httpPort: portB)
        try h.waitForSplit(endA, endB, "B back with a share of every region", timeout: .seconds(90))
        let bothBack = ContinuousClock.now - started
        let lag = watch.stop()

        try producer.finish(timeout: .seconds(120))
        try h.waitAllCaughtUp(timeout: .seconds(120))
        try expectRegionsMatchModel(h, w)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        #expect(lag.samples > 0, "/lag answered during the restarts")
        print("rolling restart: A back after \(firstBack), both after \(bothBack); during the restarts max lag_events \(lag.events), max lag_seconds \(lag.seconds) (\(lag.samples) /lag samples); \(producer.total) events at 120/s, 0 rows missing or extra")
    }

    @Test("A writer of an older build holding its partition locks (mid-batch) holds this version's applier back")
    func olderPartitionLocksExclude() throws {
        let h = try Harness(maxBatchEvents: 100)
        var w = Workload(origins: Self.regions, seed: 47)
        w.generate(sessions: 10, messages: 300)
        // The lock statement of the builds before bucket locks, for every partition, in one open
        // transaction of us-east-1: an older instance in the middle of a batch.
        let older = try h.dbs.connect("us-east-1")
        defer { older.close() }
        try older.execute("BEGIN")
        let partitions = (0..<h.cluster.partitions).map { ", pg_advisory_xact_lock(k, \($0))" }.joined()
        _ = try older.query("SELECT pg_advisory_xact_lock_shared(k::bigint)\(partitions) FROM (SELECT \(Self.olderTableKey) AS k) key")
        try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitCaughtUp("eu-west-1")
        try h.waitCaughtUp("ap-southeast-1")
        let waiting = (try? waitUntil("an applier of us-east-1 to wait for the older writer's partition lock", timeout: .seconds(20)) {
            try h.dbs.query("us-east-1", """
                SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2
                   AND classid::bigint = (\(Self.olderTableKey)::bigint + 4294967296) % 4294967296
                """)[0][0] != "0"
        }) != nil
        let stored = try h.storedOffsets("us-east-1").values.reduce(0, +)
        #expect(waiting && stored == 0,
                "us-east-1 stored \(stored) records' offsets while an older writer held every partition's lock; an applier waiting for it: \(waiting)")
        try older.execute("COMMIT")
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
    }

    @Test("An older build and this one side by side under load, then the older one replaced: nothing lost or resurrected",
          .enabled(if: ProcessInfo.processInfo.environment["RR_TEST_OLD_BINARY"] != nil,
                   "set RR_TEST_OLD_BINARY to a region-replicator built from a commit before bucket locks"))
    func olderBesideThisOne() throws {
        let old = ProcessInfo.processInfo.environment["RR_TEST_OLD_BINARY"]!
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n")
        var w = Workload(origins: Self.regions, seed: 53)
        w.generate(sessions: 30, messages: 3000)
        w.shuffle()
        var a = try h.startDaemon(binary: old)
        let b = try h.startInstance(httpPort: portB)
        let (endA, endB) = (DaemonEndpoint(port: portA), DaemonEndpoint(port: portB))
        try h.waitForSplit(endA, endB, "the older (A) and this build (B) to share every region's partitions")

        let producer = try Self.producer(h, w, perSecond: 150)
        defer { producer.stop() }
        try waitUntil("both instances to apply events through every partition of every region") {
            try h.regions.allSatisfy { try h.storedOffsets($0).count == h.cluster.partitions }
        }
        // The rolling upgrade's step: the older instance stops (its partitions move to B), starts as this build.
        #expect(producer.produced < producer.total, "the upgrade must land mid-stream")
        a.signal(SIGTERM)
        #expect(try a.wait(timeout: .seconds(45)) == 0, "the older build's draining stop exits 0")
        a = try h.startDaemon()
        try h.waitForSplit(endA, endB, "A back, as this build", timeout: .seconds(90))
        try producer.finish(timeout: .seconds(120))
        try h.waitAllCaughtUp(timeout: .seconds(120))
        try expectRegionsMatchModel(h, w)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        #expect(b.isRunning, "this build ran through the older instance's stop and restart")
        print("older build beside this one: \(producer.total) events, 0 rows missing or extra (older binary \(old))")
    }

    static func producer(_ h: Harness, _ w: Workload, perSecond: Double) throws -> RateProducer {
        let records = w.events.map { e in
            RateProducer.Record(key: e.key, value: Array(try! JSONSerialization.data(withJSONObject: e.json)))
        }
        return try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: perSecond)
    }
}

/// Polls `/lag` of the instances that answer, every 100 ms on a thread of its own, and keeps
/// the largest `lag_events` and `lag_seconds` of any region.
final class LagWatch: @unchecked Sendable {
    struct Peak { var events: Int64 = 0, seconds: Double = 0, samples = 0 }
    private let lock = NSLock()
    private var peak = Peak()
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)

    init(_ endpoints: [DaemonEndpoint]) {
        Thread { [self] in
            while !lock.withLock({ stopped }) {
                for e in endpoints {
                    guard let lag = try? e.lag() else { continue }  // an instance being restarted
                    lock.withLock {
                        peak.samples += 1
                        for r in lag.values {
                            peak.events = max(peak.events, r.int("lag_events") ?? 0)
                            peak.seconds = max(peak.seconds, r.double("lag_seconds") ?? 0)
                        }
                    }
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            done.signal()
        }.start()
    }

    /// Stops polling and returns the peaks.
    func stop() -> Peak {
        lock.withLock { stopped = true }
        done.wait()
        return lock.withLock { peak }
    }
}
