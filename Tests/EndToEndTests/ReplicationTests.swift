import Foundation
import Testing

/// End-to-end: the real `region-replicator` binary, a Kafka-protocol broker over TCP, one real
/// Postgres server per region. Serialized: some tests stop a shared server.
@Suite("Replication end to end", .serialized)
struct ReplicationTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    func expectMatchesModel(_ h: Harness, _ w: Workload, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for r in h.regions {
            let actual = try h.rows(r)
            let expected = w.expectedRows(in: r)
            let missing = Set(expected).subtracting(actual)
            let extra = Set(actual).subtracting(expected)
            #expect(missing.isEmpty && extra.isEmpty && actual.count == expected.count,
                    "region \(r): \(missing.count) rows missing (e.g. \(missing.sorted().prefix(3))), \(extra.count) extra (e.g. \(extra.sorted().prefix(3))), \(actual.count) rows vs \(expected.count) expected",
                    sourceLocation: sourceLocation)
        }
    }

    @Test("A shuffled workload from three origins leaves every region equal to the reference model")
    func shuffledWorkloadMatchesModel() throws {
        let h = try Harness()
        var w = Workload(origins: Self.regions, seed: 1)
        w.generate(sessions: 40, messages: 2500)
        w.shuffle()
        #expect(w.events.count > 2500)
        try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        try expectMatchesModel(h, w)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
            // Every region holds the other regions' messages, never its own.
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE region = $1", [r])[0][0] == "0")
            #expect(try h.rows(r).count > 1000)
        }
    }

    @Test("Delivering every event a second time (a replay from offset 0) changes no row")
    func redeliveryChangesNothing() throws {
        let h = try Harness()
        var w = Workload(origins: Self.regions, seed: 2)
        w.generate(sessions: 30, messages: 1500)
        w.shuffle()
        let d = try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        try expectMatchesModel(h, w)
        let snapshot = try h.regions.map { r in
            try h.dbs.query(r, "SELECT message_id, version, content, replicated_at, xmin::text FROM messages ORDER BY message_id")
        }

        // A replay from offset 0: forget the stored offsets and restart the daemon.
        d.signal(SIGTERM)
        #expect(try d.wait() == 0)
        for r in h.regions { _ = try h.dbs.query(r, "DELETE FROM replicator_offsets") }
        let d2 = try h.startDaemon()
        try h.waitAllCaughtUp()
        let after = try h.regions.map { r in
            try h.dbs.query(r, "SELECT message_id, version, content, replicated_at, xmin::text FROM messages ORDER BY message_id")
        }
        for (i, r) in h.regions.enumerated() {
            #expect(after[i] == snapshot[i], "region \(r): rows changed on re-delivery (content, version, replicated_at or xmin)")
        }
        // The offsets were deleted: they are back at the high watermarks only because the
        // restarted daemon re-read (and re-applied, without effect) every record.
        #expect(d2.isRunning)
    }
}
