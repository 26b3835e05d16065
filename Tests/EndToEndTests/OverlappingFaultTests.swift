import Foundation
import PostgresClient
import Testing

/// Faults that overlap, as in production: a region that turns read-only (a failover) while the
/// group rebalances, a rebalance during a region outage, a region restored from an older backup
/// while events flow, batches that can never apply as a whole. Every region must end equal to
/// the model: no row missing, extra or wrong.
@Suite("Overlapping faults", .serialized)
struct OverlappingFaultTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    /// Turns the whole Postgres server of `region` read-only (as after a failover to a replica:
    /// reads work, every write fails with 25006), or writable again.
    static func setReadOnly(_ h: Harness, _ region: String, _ on: Bool) throws {
        let db = try h.dbs.connect(region)
        defer { db.close() }
        try db.execute("SET default_transaction_read_only = off")
        try db.execute(on ? "ALTER SYSTEM SET default_transaction_read_only = on" : "ALTER SYSTEM RESET default_transaction_read_only")
        try db.query("SELECT pg_reload_conf()")
    }

    static func expectNoDifference(_ h: Harness, _ w: Workload, _ what: String) throws {
        let diffs = try ModelDifference.all(h, w)
        let line = "\(what): " + diffs.map { "\($0.region) missing=\($0.missing) extra=\($0.extra) wrong=\($0.wrong)" }.joined(separator: ", ")
        print(line)
        for d in diffs { #expect(d.isEmpty, "\(d)") }
    }

    @Test("A region turns read-only, one of two instances stops meanwhile: the survivor takes over mid-retry and loses nothing")
    func readOnlyRegionWhileAnInstanceLeaves() throws {
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n")
        let target = "eu-west-1"
        defer { try? Self.setReadOnly(h, target, false) }
        var w = Workload(origins: Self.regions, seed: 1101)
        w.generate(sessions: 120, messages: 5400)
        w.shuffle()
        let records = w.records
        let a = try h.startDaemon()
        let b = try h.startInstance(httpPort: portB)
        let (endA, endB) = (DaemonEndpoint(port: portA), DaemonEndpoint(port: portB))
        try h.waitForSplit(endA, endB)

        // ~150 events/s; after ~10 s the target region turns read-only; both instances retry.
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 150)
        defer { producer.stop() }
        try waitUntil("1,500 events to be produced", timeout: .seconds(60)) { producer.produced >= 1500 }
        try Self.setReadOnly(h, target, true)
        let readOnlyAt = ContinuousClock.now
        try waitUntil("both instances to retry the read-only region", timeout: .seconds(30)) {
            [a, b].allSatisfy { $0.log.contains("25006") }
        }

        // B stops; A takes over B's partitions in the middle of its retry loop.
        b.signal(SIGTERM)
        #expect(try b.wait(timeout: .seconds(60)) == 0)
        try h.waitForAllPartitions(endA, "A to own every partition of every region", timeout: .seconds(45))

        // The region is writable again 10 s after it turned read-only.
        let left = .seconds(10) - (ContinuousClock.now - readOnlyAt)
        if left > .zero { Thread.sleep(forTimeInterval: left.seconds) }
        try Self.setReadOnly(h, target, false)
        try producer.finish(timeout: .seconds(180))
        try h.waitAllCaughtUp(timeout: .seconds(240))
        #expect(a.isRunning)
        try Self.expectNoDifference(h, w, "read-only region + instance leaving (\(records.count) events)")
    }

    @Test("A rebalance during a region outage with a low max.poll.interval.ms: no poll-interval breach, nothing lost")
    func rebalanceDuringOutageKeepsPolling() throws {
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n")
        try h.setKafkaProperty("max.poll.interval.ms", "6000")  // the lowest librdkafka allows with session.timeout.ms 6000
        let target = "ap-southeast-1"
        let server = h.dbs.server(target)
        defer { if !server.isRunning { try? server.start() } }
        var w = Workload(origins: Self.regions, seed: 1102)
        w.generate(sessions: 80, messages: 3000)
        w.shuffle()
        let records = w.records
        let a = try h.startDaemon()
        let b = try h.startInstance(httpPort: portB)
        let endA = DaemonEndpoint(port: portA), endB = DaemonEndpoint(port: portB)
        try h.waitForSplit(endA, endB)
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 150)
        defer { producer.stop() }
        try waitUntil("1,000 events to be produced", timeout: .seconds(60)) { producer.produced >= 1000 }

        // The target region goes down; B leaves; A is assigned B's partitions during the outage.
        try server.stopImmediately()
        let downAt = ContinuousClock.now
        b.signal(SIGTERM)
        #expect(try b.wait(timeout: .seconds(60)) == 0)
        // The rebalance completes for every region while the target is still down: the callback
        // does no database I/O (new partitions wait, paused, for their stored offsets).
        let leftAt = ContinuousClock.now
        do {
            try h.waitForAllPartitions(endA, "A to own every partition of every region while \(target) is still down",
                                       timeout: .seconds(25))
        } catch {
            Issue.record("\(error); A's log ends: \(a.log.suffix(6000))")
        }
        print("rebalance during an outage: A owned every partition \(ContinuousClock.now - leftAt) after B left; \(target) down: \(!server.isRunning)")
        #expect(!server.isRunning, "\(target) came back before the rebalance completed")
        let left = .seconds(30) - (ContinuousClock.now - downAt)
        if left > .zero { Thread.sleep(forTimeInterval: left.seconds) }
        try server.start()
        try producer.finish(timeout: .seconds(180))
        try h.waitAllCaughtUp(timeout: .seconds(240))
        let breaches = a.log.split(separator: "\n").filter { $0.contains("maximum poll interval") }
        #expect(breaches.isEmpty, "A exceeded max.poll.interval.ms and left its group: \(breaches.prefix(3))")
        #expect(a.isRunning)
        try Self.expectNoDifference(h, w, "rebalance during an outage (\(records.count) events)")
    }

    @Test("A region restored from a backup ~1,500 events old while events flow: it follows the restore and equals the model")
    func restoreFromOlderBackupIsFollowed() throws {
        let h = try Harness(maxBatchEvents: 200)
        let target = "us-east-1"
        let server = h.dbs.server(target)
        var w = Workload(origins: Self.regions, seed: 1103)
        w.generate(sessions: 100, messages: 5000)
        w.shuffle()
        let records = w.records
        let daemon = try h.startDaemon()
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 150)
        defer { producer.stop() }

        try waitUntil("1,000 events applied in \(target)", timeout: .seconds(60)) { try h.storedTotal(target) >= 1000 }
        let backup = h.dir + "/\(target).dump"
        let connection = ["-h", "127.0.0.1", "-p", String(server.port), "-U", "postgres"]
        try TestEnvironment.run(TestEnvironment.pgBinDir + "/pg_dump", connection + ["-Fc", "-f", backup, h.dbs.database])
        let atBackup = try h.storedTotal(target)
        try waitUntil("1,500 more events applied in \(target)", timeout: .seconds(60)) { try h.storedTotal(target) >= atBackup + 1500 }
        // The restore takes exclusive locks while the daemon writes: Postgres may pick it as a
        // deadlock victim, and it then rolls back entirely (one transaction): run it again.
        var attempts = 0
        try waitUntil("pg_restore to succeed", timeout: .seconds(120), interval: .milliseconds(200)) {
            attempts += 1
            return (try? TestEnvironment.run(TestEnvironment.pgBinDir + "/pg_restore",
                                             connection + ["--clean", "--single-transaction", "-d", h.dbs.database, backup])) != nil
        }
        print("restore: backup at \(atBackup) stored events; restored into \(target) while the daemon ran (\(attempts) attempt(s))")

        try producer.finish(timeout: .seconds(180))
        try h.waitAllCaughtUp(timeout: .seconds(240))
        #expect(daemon.isRunning)
        try Self.expectNoDifference(h, w, "restore from an older backup (\(records.count) events)")
    }

    /// Rejects, in `region`, any statement that inserts more than `maxRows` messages (SQLSTATE
    /// 54000, as a statement too large for the server would), and any message whose content is
    /// `reject me` (23514); counts the insert statements in the sequence `rr_statements`.
    static func installGuard(_ h: Harness, _ region: String, maxRows: Int) throws {
        let db = try h.dbs.connect(region)
        defer { db.close() }
        try db.execute("""
            CREATE SEQUENCE rr_statements;
            CREATE FUNCTION rr_guard() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM nextval('rr_statements');
                IF (SELECT count(*) FROM inserted) > \(maxRows) THEN
                    RAISE EXCEPTION 'too many rows in one statement' USING ERRCODE = '54000';
                END IF;
                IF EXISTS (SELECT 1 FROM inserted WHERE content = 'reject me') THEN
                    RAISE EXCEPTION 'content rejected' USING ERRCODE = '23514';
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER rr_guard AFTER INSERT ON messages REFERENCING NEW TABLE AS inserted
                FOR EACH STATEMENT EXECUTE FUNCTION rr_guard();
            """)
    }

    @Test("Batches that can never apply as a whole (statement too large) are split: the region makes progress")
    func batchTooLargeIsSplit() throws {
        let h = try Harness(maxBatchEvents: 500)
        let target = "ap-southeast-1"
        try Self.installGuard(h, target, maxRows: 60)
        var w = Workload(origins: Self.regions, seed: 1104)
        w.generate(sessions: 40, messages: 1500)
        w.shuffle()
        try h.cluster.produce(w.events)
        let daemon = try h.startDaemon()
        try h.waitAllCaughtUp(timeout: .seconds(90))
        #expect(daemon.isRunning)
        try Self.expectNoDifference(h, w, "statement too large (\(w.events.count) events)")
        #expect(try h.dbs.query(target, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
    }

    @Test("A rejected record in a batch of 500 is isolated by bisection, not by one statement per record")
    func rejectedRecordIsIsolatedByBisection() throws {
        let h = try Harness(maxBatchEvents: 500)
        let target = "eu-west-1"
        try Self.installGuard(h, target, maxRows: 100_000)
        var ids: [String] = []
        for i in 0..<1000 {
            let id = UUID().uuidString.lowercased()
            ids.append(id)
            // One partition, so that batches are full: 500 records each.
            try h.cluster.produceRaw(key: "one-session", value: upsertEvent(id: id, session: "one-session",
                                                                            content: i == 700 ? "reject me" : "row \(i)", origin: "us-east-1"))
        }
        try h.cluster.producer.flush(timeoutMs: 30_000)
        let daemon = try h.startDaemon()
        try h.waitAllCaughtUp(timeout: .seconds(90))
        #expect(daemon.isRunning)
        let rows = try h.dbs.query(target, "SELECT count(*) FROM messages")[0][0]
        let dead = try h.dbs.query(target, "SELECT \"offset\", error FROM replicator_dead_letters")
        let statements = Int(try h.dbs.query(target, "SELECT last_value FROM rr_statements")[0][0] ?? "") ?? -1
        print("bisection: \(rows ?? "?") rows, \(dead.count) dead letter(s), \(statements) insert statements for 1000 records in batches of 500")
        #expect(rows == "999")
        #expect(dead.count == 1 && (dead.first?[1] ?? "")?.contains("content rejected") == true, "\(dead)")
        // Whole batches: 2; bisection of the bad one: ~2 × log2(500) ≈ 18. One per record: > 500.
        #expect(statements > 0 && statements <= 60, "\(statements) insert statements")
    }

    @Test("A schema problem (a renamed column) stops only that region: up false with the problem, no dead letter, no exit; fixed, it catches up")
    func schemaProblemStopsOneRegion() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n")
        let target = "us-east-1"
        var w = Workload(origins: Self.regions, seed: 1105)
        w.generate(sessions: 30, messages: 1200)
        w.shuffle()
        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        let daemon = try h.startDaemon()
        try h.waitAllCaughtUp(timeout: .seconds(90))
        _ = try h.dbs.query(target, "ALTER TABLE messages RENAME COLUMN content TO body")
        try h.cluster.produce(Array(w.events[half...]))
        let endpoint = DaemonEndpoint(port: port)
        var problem = ""
        try waitUntil("\(target) to show up false with a schema problem in /lag", timeout: .seconds(60)) {
            let lag = try endpoint.lag()[target] ?? [:]
            problem = lag["problem"] as? String ?? ""
            return lag["up"] as? Bool == false && problem.contains("schema problem")
        }
        for r in h.regions where r != target { try h.waitCaughtUp(r, timeout: .seconds(90)) }
        #expect(daemon.isRunning)
        #expect(try h.dbs.query(target, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        _ = try h.dbs.query(target, "ALTER TABLE messages RENAME COLUMN body TO content")
        try h.waitAllCaughtUp(timeout: .seconds(120))
        try waitUntil("\(target) to be up again", timeout: .seconds(60)) { try endpoint.lag()[target]?["up"] as? Bool == true }
        print("schema problem: \(target) showed \"\(problem.prefix(120))\"; fixed, it caught up")
        try Self.expectNoDifference(h, w, "schema problem fixed")
    }

    @Test("replay --dry-run writes nothing even when the role's search_path puts pg_temp after public")
    func dryRunWritesNothingWithPgTempLast() throws {
        let h = try Harness()
        let target = "eu-west-1"
        var w = Workload(origins: Self.regions, seed: 1106)
        w.generate(sessions: 20, messages: 400)
        try h.cluster.produce(w.events)
        try h.cluster.produceRaw(key: "poison", value: Array("not json".utf8))
        try h.cluster.producer.flush(timeoutMs: 30_000)
        let db = try h.dbs.connect(target)
        try db.execute("ALTER DATABASE \(h.dbs.database) SET search_path = public, pg_temp")
        db.close()
        #expect(try h.dbs.query(target, "SHOW search_path")[0][0] == "public, pg_temp")
        let dry = try h.replay(["--region", target, "--from-offset", "0", "--dry-run"])
        #expect(dry.status == 0, "\(dry.output)")
        let written = try h.bookkeeping(target)
        let rows = try h.fullRows(target)
        print("dry run with search_path public, pg_temp: \(written.count) bookkeeping rows and \(rows.count) message rows written to the real tables")
        #expect(written.isEmpty, "a dry run wrote \(written.count) rows to the region's bookkeeping tables, e.g. \(written.prefix(3))")
        #expect(rows.isEmpty, "a dry run wrote \(rows.count) messages")
    }
}
