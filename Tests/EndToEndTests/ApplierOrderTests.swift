import Foundation
import PostgresClient
import ReplicationCore
import Testing

/// The apply path straight against Postgres (no Kafka): any order, any batch split and any
/// repetition of the same events leaves the same rows — the model's.
@Suite("Apply path: order and repetition independence", .serialized)
struct ApplierOrderTests {
    /// A connection to the region's migrated database.
    static func migrated(_ dbs: RegionDatabases) throws -> (PostgresConnection, TableName) {
        let table = try TableName(validating: "messages")
        let db = try dbs.connect("eu-west-1")
        try Schema.migrate(db, table: table)
        return (db, table)
    }

    /// The workload's events as decoded records of one partition, in order.
    static func decoded(_ w: Workload) throws -> [DecodedRecord] {
        try w.events.enumerated().map { i, e in
            let value = Array(try JSONSerialization.data(withJSONObject: e.json))
            return DecodedRecord(record: RecordRef(topic: "t", partition: 0, offset: Int64(i), key: nil, value: value, timestampMs: 0),
                                 event: EventDecoder.decode(value))
        }
    }

    @Test("Three shuffles × batch sizes × a full repeat all converge to the model", arguments: [(7, 1), (8, 50), (9, 997)])
    func convergesInAnyOrder(seed: UInt64, batchSize: Int) throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let (db, table) = try Self.migrated(dbs)
        defer { db.close() }
        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: seed)
        w.generate(sessions: 15, messages: 600)
        var rng = SplitMix64(seed: seed * 31)
        let records = try Self.decoded(w)
        let applier = RegionApplier(region: "eu-west-1", table: table, applyToOrigin: false)
        var total = OutcomeCounts()
        // Everything twice, in two different random orders.
        for order in [records.shuffled(using: &rng), records.shuffled(using: &rng)] {
            for start in stride(from: 0, to: order.count, by: batchSize) {
                let batch = Array(order[start..<min(start + batchSize, order.count)])
                total = total + (try applier.apply(batch, progress: [], consumerGroup: nil, topic: "t", on: db)).counts
            }
        }
        #expect(total.total == 2 * records.count, "every record is accounted for exactly once per pass: \(total)")
        #expect(total[.deadLettered] == 0)
        let rows = try Workload.Row.all(in: db)
        let expected = w.expectedRows(in: "eu-west-1")
        #expect(rows == expected, "\(Set(expected).subtracting(rows).count) missing, \(Set(rows).subtracting(expected).count) extra")
        #expect(rows.count > 100)
    }

    @Test("A dry run classifies and writes nothing")
    func dryRunWritesNothing() throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let (db, table) = try Self.migrated(dbs)
        defer { db.close() }
        var w = Workload(origins: ["us-east-1", "ap-southeast-1"], seed: 11)
        w.generate(sessions: 5, messages: 100)
        let records = try Self.decoded(w)
        let applier = RegionApplier(region: "eu-west-1", table: table, applyToOrigin: false)
        let dry = try applier.apply(records, progress: [PartitionProgress(partition: 0, nextOffset: 100, lastRecordMs: nil)],
                                    consumerGroup: "g", topic: "t", on: db, dryRun: true)
        #expect(try db.query("SELECT count(*) FROM messages").rows[0][0] == "0")
        #expect(try db.query("SELECT count(*) FROM replicator_offsets").rows[0][0] == "0")
        let real = try applier.apply(records, progress: [], consumerGroup: nil, topic: "t", on: db)
        #expect(dry.counts == real.counts)
        #expect(real.counts[.applied] > 0)
    }

    /// One record per event (`json` nil: an undecodable record), offsets in order, Kafka timestamp 1000 + offset.
    static func records(_ events: [[String: Any]?]) throws -> [DecodedRecord] {
        try events.enumerated().map { i, e in
            let value = try e.map { Array(try JSONSerialization.data(withJSONObject: $0)) } ?? Array("not json".utf8)
            return DecodedRecord(record: RecordRef(topic: "t", partition: 0, offset: Int64(i), key: nil, value: value,
                                                   timestampMs: 1000 + Int64(i)),
                                 event: EventDecoder.decode(value))
        }
    }

    static func upsert(_ id: String, session: String = "s1", content: String = "hello", version: Int = 1,
                       origin: String = "us-east-1", created: String = "2026-11-20T10:00:00Z") -> [String: Any] {
        ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": id, "session_id": session, "role": "user",
         "content": content, "origin_region": origin, "created_at": created, "version": version]
    }

    @Test("Outcome counts and applied timestamps are exact: an all-new batch and a mixed one")
    func exactOutcomeCounts() throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let (db, table) = try Self.migrated(dbs)
        defer { db.close() }
        let applier = RegionApplier(region: "eu-west-1", table: table, applyToOrigin: false)
        let m = (1...8).map { _ in UUID().uuidString.lowercased() }
        let tombstoneM6: [String: Any] = ["type": "message.deleted", "event_id": UUID().uuidString, "message_id": m[5],
                                          "session_id": "s1", "origin_region": "us-east-1",
                                          "occurred_at": "2026-11-21T10:00:00Z", "version": 2]
        let eraseS9: [String: Any] = ["type": "session.deleted", "event_id": UUID().uuidString, "session_id": "s9",
                                      "origin_region": "us-east-1", "occurred_at": "2026-11-21T10:00:00Z"]
        // Every event is new: the statements take their fast path (no counting joins).
        let first = try Self.records([Self.upsert(m[0]), Self.upsert(m[1]), Self.upsert(m[2], session: "s2"),
                                      Self.upsert(m[3], version: 2), Self.upsert(m[4], content: "v1"), tombstoneM6, eraseS9])
        let a = try applier.apply(first, progress: [], consumerGroup: nil, topic: "t", on: db)
        #expect(a.counts[.applied] == 7 && a.counts.total == 7, "\(a.counts)")
        #expect(a.appliedTimestampsMs.sorted() == Array(1000...1006))
        #expect(try db.query("SELECT count(*) FROM messages").rows[0][0] == "5")

        // One of each outcome, in one batch.
        let mixed = try Self.records([
            Self.upsert(m[6]),                                           // applied: new
            Self.upsert(m[0]),                                           // duplicate: same version and content
            Self.upsert(m[4], content: "v2", version: 2),                // applied: newer version
            Self.upsert(m[3], version: 1),                               // stale: older version
            Self.upsert(m[5]),                                           // stale: message tombstone
            Self.upsert(m[7], session: "s9"),                            // stale: session tombstone
            tombstoneM6,                                                 // duplicate
            eraseS9,                                                     // duplicate
            Self.upsert(UUID().uuidString.lowercased(), origin: "eu-west-1"),  // skipped_origin
            nil,                                                         // dead_lettered
        ])
        let dry = try applier.apply(mixed, progress: [], consumerGroup: nil, topic: "t", on: db, dryRun: true)
        let b = try applier.apply(mixed, progress: [], consumerGroup: nil, topic: "t", on: db)
        var expected = OutcomeCounts()
        expected[.applied] = 2
        expected[.duplicate] = 3
        expected[.stale] = 3
        expected[.skippedOrigin] = 1
        expected[.deadLettered] = 1
        #expect(b.counts == expected, "\(b.counts)")
        #expect(dry.counts == expected, "dry run: \(dry.counts)")
        #expect(b.appliedTimestampsMs.sorted() == [1000, 1002])
        #expect(try db.query("SELECT version, content FROM messages WHERE message_id = $1", [m[4]]).rows == [["2", "v2"]])

        // The first batch again: every event is now a duplicate.
        let again = try applier.apply(first, progress: [], consumerGroup: nil, topic: "t", on: db)
        #expect(again.counts[.duplicate] == 6 && again.counts[.stale] == 1 && again.counts.total == 7, "\(again.counts)")
        #expect(again.appliedTimestampsMs.isEmpty)
    }
}
