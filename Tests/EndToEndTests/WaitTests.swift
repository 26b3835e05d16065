import Foundation
import PostgresClient
import Testing

/// Waiting is not poison: a lock held on a region's table, the applier's statements cancelled
/// again and again (a long-query killer, `pg_cancel_backend`), a statement timeout. The region
/// waits and retries; no record becomes a dead letter for it, the rows end exact, and the
/// daemon's watchdog pings never stop. Short apply timeouts (`apply.statement_timeout_ms`) keep
/// each test to seconds.
@Suite("Waiting is not poison", .serialized)
struct WaitTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]
    static let target = "eu-west-1"

    /// A harness whose apply statements time out after 2 s.
    static func harness(extraConfig: String = "") throws -> Harness {
        try Harness(regions: regions, maxBatchEvents: 500, extraConfig: extraConfig, applyConfig: "  statement_timeout_ms: 2000\n")
    }

    /// Holds `LOCK TABLE messages IN SHARE MODE` in `region` (as a non-concurrent `CREATE
    /// INDEX` does: reads go on, every write waits) until ``release()``.
    final class TableLock {
        let db: PostgresConnection
        init(_ h: Harness, _ region: String) throws {
            db = try h.dbs.connect(region)
            try db.execute("BEGIN; LOCK TABLE messages IN SHARE MODE")
        }
        func release() {
            try? db.execute("ROLLBACK")
            db.close()
        }
    }

    /// Cancels every active statement of the daemon's apply connection to `region`
    /// (`pg_cancel_backend`, as a long-query killer does) every `interval`, on a thread of its own.
    final class Canceller: @unchecked Sendable {
        private let lock = NSLock()
        private var stopped = false
        private var count = 0
        private let done = DispatchSemaphore(value: 0)

        init(_ h: Harness, _ region: String, every interval: Duration) throws {
            let db = try h.dbs.connect(region)
            let thread = Thread { [self] in
                defer { db.close(); done.signal() }
                while !lock.withLock({ stopped }) {
                    let r = try? db.query("""
                        SELECT count(*) FILTER (WHERE pg_cancel_backend(pid)) FROM pg_stat_activity
                        WHERE application_name = $1 AND state = 'active' AND pid <> pg_backend_pid()
                        """, ["region-replicator \(region)"])
                    let n = r?.rows.first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
                    lock.withLock { count += n }
                    Thread.sleep(forTimeInterval: interval.seconds)
                }
            }
            thread.start()
        }

        /// Statements cancelled so far.
        var cancelled: Int { lock.withLock { count } }

        func stop() {
            let first = lock.withLock { () -> Bool in
                defer { stopped = true }
                return !stopped
            }
            if first { done.wait() }
        }

        deinit { stop() }
    }

    /// Makes every write statement on `messages` in the target region take `seconds` (a
    /// statement-level trigger sleeping), or removes that trigger (nil).
    static func slowWrites(_ h: Harness, seconds: Double?) throws {
        guard let seconds else {
            _ = try h.dbs.query(target, "DROP TRIGGER rr_slow ON messages")
            return
        }
        _ = try h.dbs.query(target, """
            CREATE OR REPLACE FUNCTION rr_slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM pg_sleep(\(seconds)); RETURN NULL; END $$
            """)
        _ = try h.dbs.query(target, "CREATE TRIGGER rr_slow AFTER INSERT OR UPDATE OR DELETE ON messages FOR EACH STATEMENT EXECUTE FUNCTION rr_slow()")
    }

    static func deadLetters(_ h: Harness) throws -> Int {
        Int(try h.dbs.query(target, "SELECT count(*) FROM replicator_dead_letters")[0][0] ?? "") ?? -1
    }

    @Test("Statements cancelled again and again on the split path: the watchdog pings never stop; no dead letter, rows exact")
    func watchdogPingsDuringRepeatedCancels() throws {
        let h = try Self.harness()
        var w = Workload(origins: Self.regions, seed: 1201)
        w.generate(sessions: 12, messages: 120)
        let socket = try NotifySocket()
        let daemon = try Daemon(["run", "--config", h.configPath], logPath: h.dir + "/daemon-wait-watchdog.log",
                                environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "2000000"])
        h.daemons.append(daemon)
        let first = w.events.count - 64
        try h.cluster.produce(Array(w.events[..<first]))
        try h.waitAllCaughtUp(timeout: .seconds(60))

        // A burst of 64 events meets writes that wait (10 s each) and a killer cancelling the
        // waiting statements every 1.5 s, before the 2 s statement timeout would.
        try Self.slowWrites(h, seconds: 10)
        let canceller = try Canceller(h, Self.target, every: .milliseconds(1500))
        defer { canceller.stop() }
        let start = ContinuousClock.now
        try h.cluster.produce(Array(w.events[first...]))
        try waitUntil("24 s of slow writes and cancels", timeout: .seconds(40)) { ContinuousClock.now - start > .seconds(24) }
        let pings = socket.messages(with: "WATCHDOG=1").map(\.at).filter { $0 >= start }
        let gaps = zip(pings, pings.dropFirst()).map { $1 - $0 } + [ContinuousClock.now - (pings.last ?? start)]
        let cancels = canceller.cancelled
        canceller.stop()
        try Self.slowWrites(h, seconds: nil)
        let split = daemon.log.contains("applying it in smaller transactions")
        print("repeated cancels: \(cancels) statements cancelled in 24 s, \(pings.count) watchdog pings, longest gap \(gaps.max() ?? .zero), split path taken: \(split)")
        #expect(cancels >= 5, "the killer cancelled only \(cancels) statements")
        #expect(split, "the batch was never split")
        #expect(gaps.allSatisfy { $0 <= .milliseconds(2500) }, "a watchdog gap above WATCHDOG_USEC: \(gaps.max() ?? .zero)")
        #expect(!daemon.log.contains("withholding the systemd watchdog ping"))

        try h.waitAllCaughtUp(timeout: .seconds(60))
        #expect(daemon.isRunning)
        let dead = try Self.deadLetters(h)
        print("repeated cancels: \(dead) dead letters in \(Self.target)")
        #expect(dead == 0)
        try expectRegionsMatchModel(h, w)
    }

    @Test("A lock held longer than the statement timeout while single events trickle in: no dead letter, rows exact")
    func lockLongerThanStatementTimeout() throws {
        let h = try Self.harness()
        var w = Workload(origins: Self.regions, seed: 1202)
        w.generate(sessions: 10, messages: 60)
        let records = w.records
        let first = 20
        try h.cluster.produce(Array(w.events[..<first]))
        let daemon = try h.startDaemon()
        try h.waitAllCaughtUp(timeout: .seconds(60))

        // 8 s of lock (4× the statement timeout) while events arrive one by one, 5 a second.
        let lock = try TableLock(h, Self.target)
        defer { lock.release() }
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: Array(records[first...]), perSecond: 5)
        defer { producer.stop() }
        let start = ContinuousClock.now
        try waitUntil("8 s of lock", timeout: .seconds(30)) { ContinuousClock.now - start > .seconds(8) }
        lock.release()
        try producer.finish(timeout: .seconds(60))
        try h.waitAllCaughtUp(timeout: .seconds(60))
        #expect(daemon.isRunning)
        let dead = try Self.deadLetters(h)
        let lockTimeouts = daemon.log.split(separator: "\n").filter { $0.contains("55P03") }.count
        let statementTimeouts = daemon.log.split(separator: "\n").filter { $0.contains("57014") }.count
        print("lock held 8 s, statement timeout 2 s, \(w.events.count) events trickling: \(dead) dead letters in \(Self.target); log lines with 55P03: \(lockTimeouts), with 57014: \(statementTimeouts)")
        #expect(dead == 0)
        try expectRegionsMatchModel(h, w)
    }

    @Test("The applier's backend cancelled repeatedly (pg_cancel_backend) while events trickle in: no dead letter, rows exact")
    func backendCancelledRepeatedly() throws {
        let h = try Self.harness()
        var w = Workload(origins: Self.regions, seed: 1203)
        w.generate(sessions: 10, messages: 80)
        let records = w.records
        let first = 20
        try h.cluster.produce(Array(w.events[..<first]))
        let daemon = try h.startDaemon()
        try h.waitAllCaughtUp(timeout: .seconds(60))
        // Every write statement in the target region takes 0.2 s, so the cancels find it running.
        try Self.slowWrites(h, seconds: 0.2)

        let canceller = try Canceller(h, Self.target, every: .milliseconds(250))
        defer { canceller.stop() }
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: Array(records[first...]), perSecond: 8)
        defer { producer.stop() }
        let start = ContinuousClock.now
        try waitUntil("8 s of cancels", timeout: .seconds(30)) { ContinuousClock.now - start > .seconds(8) }
        let cancels = canceller.cancelled
        canceller.stop()
        try producer.finish(timeout: .seconds(60))
        try h.waitAllCaughtUp(timeout: .seconds(60))
        #expect(daemon.isRunning)
        let dead = try Self.deadLetters(h)
        print("backend cancelled repeatedly: \(cancels) cancels in 8 s, \(w.events.count) events: \(dead) dead letters in \(Self.target)")
        #expect(cancels >= 5, "the killer cancelled only \(cancels) statements")
        #expect(dead == 0)
        try expectRegionsMatchModel(h, w)
    }
}
