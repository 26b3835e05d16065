import Foundation
import Testing

/// Several instances with the same configuration: each region's consumer group spreads the
/// partitions over them; offsets live in each region's database, so a partition that moves
/// resumes exactly where its last owner committed.
@Suite("Scale-out: instances share each region's partitions", .serialized)
struct ScaleOutTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    @Test("Two instances split every region's partitions; SIGKILL one mid-stream: the other takes them over, nothing lost")
    func killOneOfTwo() throws {
        let portA = try freeLoopbackPort(), portB = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 100, extraConfig: "http:\n  listen: \"127.0.0.1:\(portA)\"\n")
        var w = Workload(origins: Self.regions, seed: 31)
        w.generate(sessions: 30, messages: 4000)
        w.shuffle()
        let all = Set(0..<h.cluster.partitions)
        let a = try h.startDaemon()
        let b = try h.startInstance(httpPort: portB)
        let (endA, endB) = (DaemonEndpoint(port: portA), DaemonEndpoint(port: portB))

        // Both instances own partitions of every region, disjoint, together all of them.
        try h.waitForSplit(endA, endB)
        let before = try endA.assignedPartitions()

        // Events flow at a steady rate; A dies while they do.
        let records = w.events.map { e in
            RateProducer.Record(key: e.key, value: Array(try! JSONSerialization.data(withJSONObject: e.json)))
        }
        let producer = try RateProducer(bootstrap: h.cluster.bootstrap, topic: h.cluster.topic, records: records, perSecond: 1500)
        defer { producer.stop() }
        try waitUntil("a third of the events to be produced and some applied by both instances") {
            guard producer.produced > records.count / 3 else { return false }
            return try h.regions.allSatisfy { try h.storedOffsets($0).count == all.count }
        }
        #expect(try endA.assignedPartitions() == before, "A's partitions moved before the kill")
        a.kill9()
        let killedAt = ContinuousClock.now
        #expect(producer.produced < records.count, "the kill must land mid-stream")

        // B takes over A's partitions once the group notices (session.timeout.ms = 6 s here).
        try h.waitForAllPartitions(endB, "B to own every partition of every region", timeout: .seconds(45))
        let takeover = ContinuousClock.now - killedAt
        try producer.finish(timeout: .seconds(120))
        try h.waitAllCaughtUp(timeout: .seconds(180))
        try expectRegionsMatchModel(h, w)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        #expect(b.isRunning)
        #expect(b.log.contains("partitions assigned"))
        print("scale-out: B took over A's partitions \(takeover) after SIGKILL; \(records.count) events, 0 rows missing or extra")
    }
}
