import Foundation
import PostgresClient
@testable import ReplicationCore
import Synchronization
import Testing

/// `apply.connections`: several pipelines per region, each an ordinary member of the region's
/// consumer group with its own connection, and the advisory locks that let writers of
/// different partitions apply at the same time.
@Suite("Parallel apply within a region", .serialized)
struct ParallelApplyTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    /// Each shard's partitions of `region` now, from its log lines in order (`region=… shard=n
    /// partitions=[…]`): the consumer is cooperative, so "partitions assigned" adds and
    /// "partitions revoked" removes.
    static func shardAssignments(_ log: String, region: String) -> [Int: Set<Int>] {
        var out: [Int: Set<Int>] = [:]
        for line in log.split(separator: "\n") where line.contains("region=\(region) ") {
            let assigned = line.contains("partitions assigned")
            guard assigned || line.contains("partitions revoked"),
                  let shard = line.firstMatch(of: /shard=(\d+)/).flatMap({ Int($0.1) }),
                  let list = line.firstMatch(of: /partitions="?\[([0-9, ]*)\]/) else { continue }
            let parts = Set(list.1.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) })
            if assigned { out[shard, default: []].formUnion(parts) } else { out[shard, default: []].subtract(parts) }
        }
        return out
    }

    @Test("apply.connections 3 on 6 partitions: each shard owns a share, every region equals the model, offsets per partition right")
    func threeShardsShareTheRegion() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n",
                            partitions: 6, applyConfig: "  connections: 3")
        var w = Workload(origins: Self.regions, seed: 4242)
        w.generate(sessions: 60, messages: 4000)
        w.shuffle()
        let all = Set(0..<h.cluster.partitions)
        let d = try h.startDaemon()
        let end = DaemonEndpoint(port: port)
        // Three members per region's group: each ends with two of the six partitions.
        defer {
            // On failure, what each shard was last given (the harness removes the log).
            for r in h.regions { print("region \(r) shards: \(Self.shardAssignments(d.log, region: r).sorted { $0.key < $1.key })") }
        }
        try waitUntil("every region's three shards to own disjoint shares of all partitions", timeout: .seconds(90)) {
            let log = d.log
            return h.regions.allSatisfy { r in
                let shares = Self.shardAssignments(log, region: r)
                guard shares.count == 3, shares.values.allSatisfy({ !$0.isEmpty }) else { return false }
                let union = shares.values.reduce(into: Set<Int>()) { $0.formUnion($1) }
                return union == all && shares.values.map(\.count).reduce(0, +) == all.count
            }
        }
        #expect(try end.assignedPartitions().allSatisfy { $0.value == all }, "/lag shows the union of the shards' partitions")
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp(timeout: .seconds(180))
        try expectRegionsMatchModel(h, w)
        // Offsets: one row per partition, each exactly its high watermark.
        let high = try h.cluster.highWatermarks()
        for r in h.regions {
            let stored = try h.storedOffsets(r)
            #expect(stored == high.mapValues { $0 }.filter { $0.value > 0 }, "region \(r)")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        // Every shard applied and each has its own connection to the region.
        for r in h.regions {
            let apps = try h.dbs.query(r, "SELECT count(DISTINCT application_name) FROM pg_stat_activity WHERE application_name LIKE $1",
                                       ["region-replicator \(r) %"])
            #expect(apps[0][0] == "3", "region \(r): one connection per shard")
        }
        let lag = try end.lag()
        for r in h.regions { #expect((lag[r]?["up"] as? Bool) == true, "region \(r) up") }
        #expect(d.log.contains("shard=3"))
    }

    @Test("connections 2: a region turns read-only during apply and a second instance joins: nothing lost")
    func readOnlyRegionWhileASecondInstanceJoins() throws {
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 200, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n",
                            applyConfig: "  connections: 2")
        let target = "eu-west-1"
        defer { try? OverlappingFaultTests.setReadOnly(h, target, false) }
        var w = Workload(origins: Self.regions, seed: 2207)
        w.generate(sessions: 120, messages: 5000)
        w.shuffle()
        let records = w.records
        let a = try h.startDaemon()
        let endA = DaemonEndpoint(port: portA)
        try h.waitForAllPartitions(endA, "A's two shards to own every partition")
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 200)
        defer { producer.stop() }
        try waitUntil("1,500 events to be produced", timeout: .seconds(60)) { producer.produced >= 1500 }
        try OverlappingFaultTests.setReadOnly(h, target, true)
        try waitUntil("A to retry the read-only region", timeout: .seconds(30)) { a.log.contains("25006") }
        try waitUntil("/lag to show the read-only region down", timeout: .seconds(30)) {
            (try endA.lag()[target]?["up"] as? Bool) == false
        }

        // B (two shards too) joins mid-retry: four members share each region's six partitions.
        let b = try h.startInstance(httpPort: portB)
        let endB = DaemonEndpoint(port: portB)
        try h.waitForSplit(endA, endB, "A and B to share every region's partitions")
        try OverlappingFaultTests.setReadOnly(h, target, false)
        try producer.finish(timeout: .seconds(180))
        try h.waitAllCaughtUp(timeout: .seconds(240))
        #expect(a.isRunning && b.isRunning)
        try waitUntil("/lag to show the region up again on both", timeout: .seconds(30)) {
            let (x, y) = (try endA.lag()[target]?["up"] as? Bool, try endB.lag()[target]?["up"] as? Bool)
            return x == true && y == true
        }
        try OverlappingFaultTests.expectNoDifference(h, w, "connections 2: read-only region + instance joining (\(records.count) events)")
    }

    // MARK: - Locks

    /// Runs `body` on its own thread; `done` turns true when it returns.
    final class Background: @unchecked Sendable {
        private let finished = Atomic<Bool>(false)
        private let failure = Mutex<String?>(nil)
        var done: Bool { finished.load(ordering: .acquiring) }
        var error: String? { failure.withLock { $0 } }

        init(_ name: String, _ body: @escaping @Sendable () throws -> Void) {
            let t = Thread { [self] in
                do { try body() } catch { failure.withLock { $0 = "\(name): \(error)" } }
                finished.store(true, ordering: .releasing)
            }
            t.start()
        }
    }

    /// Decoded upserts of `w` as records of `partition`.
    static func records(_ w: Workload, partition: Int32) throws -> [DecodedRecord] {
        try w.events.enumerated().map { i, e in
            let value = Array(try JSONSerialization.data(withJSONObject: e.json))
            return DecodedRecord(record: RecordRef(topic: "t", partition: partition, offset: Int64(i), key: nil, value: value, timestampMs: 0),
                                 event: EventDecoder.decode(value))
        }
    }

    /// Whether applying `a` and `b` takes one row bucket with at least one of them exclusive.
    static func rowLocksConflict(_ a: [DecodedRecord], _ b: [DecodedRecord]) -> Bool {
        func rows(_ r: [DecodedRecord]) -> [ApplyLocks.Key: Bool] {
            ApplyLocks(plan: ApplyPlan(records: r, region: "eu-west-1", applyToOrigin: false), partitions: [Int32]()).modes
                .filter { $0.key.space == .rows }
        }
        let (x, y) = (rows(a), rows(b))
        return x.contains { k, exclusive in y[k].map { $0 || exclusive } ?? false }
    }

    static func progress(_ p: Int32, _ n: Int64) -> [PartitionProgress] { [PartitionProgress(partition: p, nextOffset: n, lastRecordMs: nil)] }

    /// Advisory locks waited for in the region's database: (objsubid 1 = the table's key,
    /// 2 = a partition's; the partition number).
    static func waitingAdvisoryLocks(_ dbs: RegionDatabases) throws -> [(kind: Int, partition: Int)] {
        try dbs.query("eu-west-1", "SELECT objsubid, objid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                          + "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").map {
            (Int($0[0]!)!, Int($0[1]!)!)
        }
    }

    @Test("Partition locks: another partition applies while one is held, the same partition waits, verify --repair's table lock waits for both")
    func partitionLocks() throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let table = try TableName(validating: "messages")
        let setup = try dbs.connect("eu-west-1")
        defer { setup.close() }
        try Schema.migrate(setup, table: table)
        // Different sessions per partition, as keying by session id gives. Message ids are
        // random, so a deletion in one partition can share a row bucket with an upsert in the
        // other (1,024 buckets) and rightly wait for it: draw again until no row key of one is
        // taken exclusively by the other.
        var w = Workload(origins: ["us-east-1"], seed: 77), w1 = Workload(origins: ["us-east-1"], seed: 78)
        w.generate(sessions: 4, messages: 40)
        w1.generate(sessions: 4, messages: 40, contentPrefix: "p1-")
        let p0 = try Self.records(w, partition: 0)
        var drawn = try Self.records(w1, partition: 1)
        var attempt: UInt64 = 0
        while Self.rowLocksConflict(p0, drawn) {
            attempt += 1
            try #require(attempt < 100, "no draw of two partitions without a shared row bucket")
            w1 = Workload(origins: ["us-east-1"], seed: 78 + attempt)
            w1.generate(sessions: 4, messages: 40, contentPrefix: "p1-")
            drawn = try Self.records(w1, partition: 1)
        }
        let p1 = drawn
        let applier = RegionApplier(region: "eu-west-1", table: table, applyToOrigin: false)
        let group = "g"
        // Offsets rows for partitions 0 and 1 exist.
        for p: Int32 in [0, 1] {
            _ = try applier.apply([], progress: Self.progress(p, 1), consumerGroup: group, topic: "t", on: setup)
        }
        // A blocker holds partition 0's offsets row: the next applier of partition 0 takes its
        // advisory locks, then waits on that row, inside its transaction.
        let blocker = try dbs.connect("eu-west-1")
        defer { blocker.close() }
        try blocker.execute("BEGIN")
        var blockerOpen = true
        try blocker.query("SELECT 1 FROM replicator_offsets WHERE partition = 0 FOR UPDATE")

        let (x0, x1, x2) = (try dbs.connect("eu-west-1"), try dbs.connect("eu-west-1"), try dbs.connect("eu-west-1"))
        let repairConnection = try dbs.connect("eu-west-1")
        let running = Mutex<[Background]>([])
        defer {
            // On a failure, threads may still wait in their connections: end the blocker's
            // transaction and let them return before their connections close under them.
            if blockerOpen { try? blocker.execute("ROLLBACK") }
            try? waitUntil("every applier thread to return", timeout: .seconds(60)) { running.withLock { $0.allSatisfy(\.done) } }
            for c in [x0, x1, x2, repairConnection] { c.close() }
        }
        func start(_ name: String, _ body: @escaping @Sendable () throws -> Void) -> Background {
            let b = Background(name, body)
            running.withLock { $0.append(b) }
            return b
        }
        let first = start("partition 0, first") {
            _ = try applier.apply(Array(p0.prefix(20)), progress: Self.progress(0, 2), consumerGroup: group, topic: "t", on: x0)
        }
        // Two keys numbered by partition 0: its offsets key and the older builds' key of it.
        try waitUntil("the first applier of partition 0 to hold its locks and wait on the offsets row", timeout: .seconds(20)) {
            try dbs.query("eu-west-1", "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                              + "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.objid = 0 AND a.wait_event_type = 'Lock'")[0][0] == "2"
        }
        #expect(!first.done)

        // Partition 1 applies and commits while partition 0's transaction is open.
        let other = start("partition 1") {
            _ = try applier.apply(p1, progress: Self.progress(1, 2), consumerGroup: group, topic: "t", on: x1)
        }
        try waitUntil("the applier of partition 1 to commit", timeout: .seconds(20)) { other.done }
        #expect(other.error == nil, "\(other.error ?? "")")
        #expect(!first.done, "partition 0's transaction is still open")
        #expect(try dbs.query("eu-west-1", "SELECT next_offset FROM replicator_offsets WHERE partition = 1")[0][0] == "2")

        // A second applier of partition 0 waits for the first's partition lock.
        let second = start("partition 0, second") {
            _ = try applier.apply(Array(p0.suffix(20)), progress: Self.progress(0, 3), consumerGroup: group, topic: "t", on: x2)
        }
        try waitUntil("the second applier of partition 0 to wait for partition 0's lock", timeout: .seconds(20)) {
            try Self.waitingAdvisoryLocks(dbs).contains { $0.kind == 2 && $0.partition == 0 }
        }
        #expect(!second.done)

        // verify --repair's lock (the table's key, exclusive) waits while appliers hold it shared.
        let repairLock = Statements(table: table, tables: .unqualified, columns: .standard).exclusiveLock
        let repair = start("repair lock") {
            try repairConnection.execute("BEGIN")
            try repairConnection.query(repairLock)
            try repairConnection.execute("COMMIT")
        }
        try waitUntil("the repair's exclusive table lock to wait", timeout: .seconds(20)) {
            try Self.waitingAdvisoryLocks(dbs).contains { $0.kind == 1 }
        }
        #expect(!repair.done)

        // Releasing the offsets row lets everything finish, in lock order.
        try blocker.execute("COMMIT")
        blockerOpen = false
        try waitUntil("both appliers of partition 0 and the repair lock to finish", timeout: .seconds(20)) {
            first.done && second.done && repair.done
        }
        for b in [first, second, repair] { #expect(b.error == nil, "\(b.error ?? "")") }
        #expect(try dbs.query("eu-west-1", "SELECT next_offset FROM replicator_offsets WHERE partition = 0")[0][0] == "3")
        #expect(try Self.waitingAdvisoryLocks(dbs).isEmpty)
    }
}
