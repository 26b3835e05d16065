import Foundation
import KafkaClient
import PostgresClient
@testable import ReplicationCore
import Testing

/// The apply path's locks must not depend on how a producer partitioned: writers that see one
/// session's events through different partitions (another partitioner, another key, `replay`,
/// a second instance) still exclude each other where a deletion could otherwise be undone.
@Suite("Locks by session and message, not by partition", .serialized)
struct SessionLockTests {
    typealias Background = ParallelApplyTests.Background
    static let region = "eu-west-1"

    /// Rows of `region` that the region's own tombstones cover: deleted or erased messages that came back.
    static func resurrected(_ dbs: RegionDatabases, _ region: String) throws -> Int {
        Int(try dbs.query(region, """
            SELECT count(*) FROM messages m
            WHERE EXISTS (SELECT 1 FROM replicator_message_tombstones t WHERE t.message_id = m.message_id AND t.version >= m.version)
               OR EXISTS (SELECT 1 FROM replicator_session_tombstones s WHERE s.session_id = m.session_id AND s.deleted_at >= m.created_at)
            """)[0][0] ?? "-1") ?? -1
    }

    static func deletion(id: String, session: String, version: Int) -> [UInt8] {
        json(["type": "message.deleted", "event_id": UUID().uuidString, "message_id": id, "session_id": session,
              "origin_region": "us-east-1", "occurred_at": "2026-11-24T10:05:00Z", "version": version])
    }

    static func erasure(session: String, at: String = "2026-11-24T11:00:00Z") -> [UInt8] {
        json(["type": "session.deleted", "event_id": UUID().uuidString, "session_id": session,
              "origin_region": "us-east-1", "occurred_at": at])
    }

    static func json(_ object: [String: Any]) -> [UInt8] {
        Array(try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
    }

    static func record(_ value: [UInt8], partition: Int32, offset: Int64) -> DecodedRecord {
        DecodedRecord(record: RecordRef(topic: "t", partition: partition, offset: offset, key: nil, value: value, timestampMs: 0),
                      event: EventDecoder.decode(value))
    }

    static func progress(_ p: Int32, _ n: Int64) -> [PartitionProgress] { [PartitionProgress(partition: p, nextOffset: n, lastRecordMs: nil)] }

    // MARK: - Two keyings, three writers

    @Test("The same events under two keyings, applied by two shards and a replay at once: nothing deleted or erased comes back")
    func twoKeyingsThreeWriters() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(regions: [Self.region], maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n",
                            partitions: 6, applyConfig: "  connections: 2")
        var w = Workload(origins: ["us-east-1"], seed: 4711)
        w.generate(sessions: 40, messages: 3000, erasureEvery: 30)
        // Copy A keyed by session id (the contract), copy B by a key of its own per event (a
        // producer with another partitioner, or none), interleaved: the two copies of an event
        // land in different partitions at about the same position of the backlog.
        for (i, e) in w.events.enumerated() {
            let value = Array(try JSONSerialization.data(withJSONObject: e.json))
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array(e.key.utf8), value: value)
            try h.cluster.producer.produce(topic: h.cluster.topic, key: Array("copy-b-\(i)".utf8), value: value)
        }
        try h.cluster.producer.flush(timeoutMs: 60_000)

        let d = try h.startDaemon()
        try h.waitForAllPartitions(DaemonEndpoint(port: port), "the daemon's two shards to own every partition")
        let replay = Background("replay") {
            let (status, output) = try h.replay(["--region", Self.region, "--from-offset", "0"])
            guard status == 0 else { throw TestSetupError("replay exited \(status): \(output.suffix(2000))") }
        }
        try h.waitCaughtUp(Self.region, timeout: .seconds(240))
        try waitUntil("the replay to finish", timeout: .seconds(240)) { replay.done }
        #expect(replay.error == nil, "\(replay.error ?? "")")
        #expect(d.isRunning)
        let back = try Self.resurrected(h.dbs, Self.region)
        print("two keyings, three writers: \(back) deleted or erased messages came back in \(Self.region) (\(w.events.count * 2) records)")
        let diff = try ModelDifference(h, region: Self.region, expected: w.expectedRows(in: Self.region))
        print("two keyings: \(diff)")
        #expect(back == 0, "\(back) deleted or erased messages came back in \(Self.region)")
        try expectRegionsMatchModel(h, w)
    }

    // MARK: - A deletion and an upsert of one message in flight at once

    @Test("A deletion or erasure arriving through another partition while an upsert of its message is in flight: the message stays deleted")
    func deletionThroughAnotherPartition() throws {
        let dbs = try RegionDatabases(regions: [Self.region])
        defer { dbs.drop() }
        let table = try TableName(validating: "messages")
        let setup = try dbs.connect(Self.region)
        defer { setup.close() }
        try Schema.migrate(setup, table: table)
        let applier = RegionApplier(region: Self.region, table: table, applyToOrigin: false)
        for p: Int32 in [0, 1] {
            _ = try applier.apply([], progress: Self.progress(p, 1), consumerGroup: "g", topic: "t", on: setup)
        }
        var next: [Int32: Int64] = [0: 1, 1: 1]
        let cases: [(String, @Sendable (String, String) -> [UInt8])] = [
            ("message.deleted", { id, session in Self.deletion(id: id, session: session, version: 2) }),
            ("session.deleted", { _, session in Self.erasure(session: session) }),
        ]
        for (kind, deletionOf) in cases {
            let id = UUID().uuidString.lowercased(), session = "sess-\(kind)"
            // A blocker holds partition 0's offsets row: the applier of partition 0 takes its
            // locks and writes the row, then waits on the offsets row inside its transaction.
            let blocker = try dbs.connect(Self.region)
            defer { blocker.close() }
            try blocker.execute("BEGIN")
            try blocker.query("SELECT 1 FROM replicator_offsets WHERE partition = 0 FOR UPDATE")
            let (x0, x1) = (try dbs.connect(Self.region), try dbs.connect(Self.region))
            defer { x0.close(); x1.close() }
            let (o0, o1) = (next[0]!, next[1]!)
            next = [0: o0 + 1, 1: o1 + 1]
            let upsert = Background("\(kind): the upsert through partition 0") {
                _ = try applier.apply([Self.record(upsertEvent(id: id, session: session, content: "hello", origin: "us-east-1"), partition: 0, offset: o0)],
                                      progress: Self.progress(0, o0 + 1), consumerGroup: "g", topic: "t", on: x0)
            }
            try waitUntil("\(kind): the upsert to wait on the offsets row", timeout: .seconds(20)) {
                try dbs.query(Self.region, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0][0] == "1"
            }
            let deletion = Background("\(kind): the deletion through partition 1") {
                _ = try applier.apply([Self.record(deletionOf(id, session), partition: 1, offset: o1)],
                                      progress: Self.progress(1, o1 + 1), consumerGroup: "g", topic: "t", on: x1)
            }
            // Either it commits at once (it took no lock the upsert holds) or it waits for one.
            try waitUntil("\(kind): the deletion to commit or to wait for a lock", timeout: .seconds(20)) {
                try deletion.done || ParallelApplyTests.waitingAdvisoryLocks(dbs).count == 1
            }
            try blocker.execute("COMMIT")
            try waitUntil("\(kind): both writers to finish", timeout: .seconds(20)) { upsert.done && deletion.done }
            for b in [upsert, deletion] { #expect(b.error == nil, "\(b.error ?? "")") }
            let rows = try dbs.query(Self.region, "SELECT version FROM messages WHERE message_id = $1", [id])
            #expect(rows.isEmpty, "\(kind): the deleted message came back: \(rows)")
        }
        #expect(try Self.resurrected(dbs, Self.region) == 0)
    }

    // MARK: - The table's key

    @Test("The table's key is the resolved name: verify --repair's lock for public.messages waits for an applier configured as messages")
    func tableKeyIsTheResolvedName() throws {
        let dbs = try RegionDatabases(regions: [Self.region])
        defer { dbs.drop() }
        let table = try TableName(validating: "messages")
        let setup = try dbs.connect(Self.region)
        defer { setup.close() }
        try Schema.migrate(setup, table: table)
        let applier = RegionApplier(region: Self.region, table: table, applyToOrigin: false)
        _ = try applier.apply([], progress: Self.progress(0, 1), consumerGroup: "g", topic: "t", on: setup)
        let blocker = try dbs.connect(Self.region)
        defer { blocker.close() }
        try blocker.execute("BEGIN")
        try blocker.query("SELECT 1 FROM replicator_offsets WHERE partition = 0 FOR UPDATE")
        let (x0, repairConnection) = (try dbs.connect(Self.region), try dbs.connect(Self.region))
        defer { x0.close(); repairConnection.close() }
        let applying = Background("the applier of messages") {
            _ = try applier.apply([Self.record(upsertEvent(id: UUID().uuidString, session: "s", content: "x", origin: "us-east-1"), partition: 0, offset: 1)],
                                  progress: Self.progress(0, 2), consumerGroup: "g", topic: "t", on: x0)
        }
        try waitUntil("the applier to hold its locks and wait on the offsets row", timeout: .seconds(20)) {
            try dbs.query(Self.region, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")[0][0] == "1"
        }
        let qualified = Statements(table: try TableName(validating: "public.messages"), tables: .unqualified, columns: .standard)
        let repair = Background("repair lock of public.messages") {
            try repairConnection.execute("BEGIN")
            try repairConnection.query(qualified.exclusiveLock)
            try repairConnection.execute("COMMIT")
        }
        defer { try? blocker.execute("COMMIT") }
        try waitUntil("the exclusive lock of public.messages to wait for the applier of messages", timeout: .seconds(10)) {
            try ParallelApplyTests.waitingAdvisoryLocks(dbs).contains { $0.kind == 1 }
        }
        #expect(!repair.done)
        try blocker.execute("COMMIT")
        try waitUntil("the applier and the repair lock to finish", timeout: .seconds(20)) { applying.done && repair.done }
        for b in [applying, repair] { #expect(b.error == nil, "\(b.error ?? "")") }
    }

    // MARK: - A message whose session changes between versions

    @Test("A message whose session changes between versions: both arrival orders end alike, the changing version is a dead letter")
    func sessionChangeBothOrders() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(regions: [Self.region], maxBatchEvents: 50, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n")
        _ = try h.startDaemon()
        func produce(_ key: String, _ value: [UInt8]) throws {
            try h.cluster.produceRaw(key: key, value: value)
            try h.cluster.producer.flush(timeoutMs: 10_000)
        }
        func state(_ id: String) throws -> [String?]? {
            try h.dbs.query(Self.region, "SELECT session_id, version::text FROM messages WHERE message_id = $1", [id]).first
        }
        // The review's example: U1(M, S1, v1) through one partition; U2(M, S2, v2) and the erasure
        // of S2 through another. Order A: U1 first. Order B: U2 and the erasure first.
        let a = UUID().uuidString.lowercased(), b = UUID().uuidString.lowercased()
        try produce("a-s1", upsertEvent(id: a, session: "a-s1", content: "v1", origin: "us-east-1", version: 1))
        try h.waitCaughtUp(Self.region)
        try produce("a-s2", upsertEvent(id: a, session: "a-s2", content: "v2", origin: "us-east-1", version: 2))
        try h.waitCaughtUp(Self.region)
        try produce("a-s2", Self.erasure(session: "a-s2"))
        try h.waitCaughtUp(Self.region)
        try produce("b-s2", upsertEvent(id: b, session: "b-s2", content: "v2", origin: "us-east-1", version: 2))
        try h.waitCaughtUp(Self.region)
        try produce("b-s2", Self.erasure(session: "b-s2"))
        try h.waitCaughtUp(Self.region)
        try produce("b-s1", upsertEvent(id: b, session: "b-s1", content: "v1", origin: "us-east-1", version: 1))
        try h.waitCaughtUp(Self.region)

        let (stateA, stateB) = (try state(a), try state(b))
        #expect(stateA == ["a-s1", "1"] && stateB == ["b-s1", "1"], "order A ends with \(String(describing: stateA)), order B with \(String(describing: stateB))")
        let dead = try h.dbs.query(Self.region, "SELECT error FROM replicator_dead_letters ORDER BY id")
        #expect(dead.count == 1 && (dead.first?[0] ?? "").hasPrefix("identity_changed"), "dead letters: \(dead)")
        let metrics = try DaemonEndpoint(port: port).metrics()
        #expect(metrics["region_replicator_identity_changes_total{region=\"\(Self.region)\"}"] == 1, "\(metrics.filter { $0.key.contains("identity") })")
    }
}
