import Foundation
import Testing

/// End-to-end: events published in Kafka transactions. Every committed transaction leaves a
/// commit marker after its last record in each of its partitions: an offset no reader ever
/// gets, so a partition whose last transaction is applied ends one offset past the offset
/// after its last record.
@Suite("A transactional producer")
struct TransactionalProducerTests {
    @Test("Commit markers after the last records: a caught-up region stores the offsets past them, /lag reads 0 events and 0 s, verify finds every region settled")
    func trailingMarkersAreNotLag() throws {
        let scratch = NSTemporaryDirectory() + "rr-txn-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let producer = try TransactionalProducer(dir: scratch)
        let port = try HTTPProbe.freePort()
        let h = try Harness(extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n", partitions: 3, standaloneBroker: true,
                            brokerEnvironment: producer.brokerEnvironment)
        let endpoint = DaemonEndpoint(port: port)
        var w = Workload(origins: h.regions, seed: 31)
        w.generate(sessions: 6, messages: 40, contentPrefix: "txn-")
        try h.startDaemon()
        try producer.produce(w.events, perTransaction: 7, brokers: h.cluster.bootstrap, topic: h.cluster.topic, dir: scratch)
        let high = try h.cluster.highWatermarks()
        #expect(high.values.reduce(0, +) > Int64(w.events.count), "the log holds markers besides the records: \(high)")

        var last = ""
        var caughtUp = false
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while !caughtUp && ContinuousClock.now < deadline {
            let lag = try endpoint.lag()
            last = h.regions.map { "\($0): \(lag[$0]?.int("lag_events") ?? -1) events, \(lag[$0]?.double("lag_seconds") ?? -1) s" }
                .joined(separator: "; ")
            // Measured against the watermarks read after the producer finished, and 0.
            caughtUp = h.regions.allSatisfy { r in
                let marks = ((lag[r]?["partitions"] as? [[String: Any]]) ?? []).compactMap { p in
                    p.int("partition").flatMap { n in p.int("high_watermark").map { (Int32(n), $0) } }
                }
                return Dictionary(uniqueKeysWithValues: marks) == high
                    && lag[r]?.int("lag_events") == 0 && lag[r]?.double("lag_seconds") == 0
            }
            if !caughtUp { Thread.sleep(forTimeInterval: 0.2) }
        }
        #expect(caughtUp, "/lag never read 0 for every region: \(last)")
        for r in h.regions {
            #expect(try h.storedOffsets(r) == high.filter { $0.value > 0 }, "region \(r)")
        }
        try expectRegionsMatchModel(h, w)

        // A divergence, so that verify waits for every region to apply what the topic holds.
        let victim = h.regions[0]
        _ = try h.dbs.query(victim, "DELETE FROM messages WHERE message_id = (SELECT min(message_id::text)::uuid FROM messages)")
        let verify = try h.verify(["--json", "--settle-timeout", "3"])
        let report = try VerifyJSON(verify.output)
        #expect(verify.status == 2 && report.settled == true, "\(verify.output)")
    }
}
