import Foundation
import PostgresClient
import ReplicationCore
import Testing

/// The apply path straight against Postgres (no Kafka): any order, any batch split and any
/// repetition of the same events leaves the same rows — the model's.
@Suite("Apply path: order and repetition independence", .serialized)
struct ApplierOrderTests {
    @Test("Three shuffles × batch sizes × a full repeat all converge to the model", arguments: [(7, 1), (8, 50), (9, 997)])
    func convergesInAnyOrder(seed: UInt64, batchSize: Int) throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let table = try TableName(validating: "messages")
        let db = try dbs.connect("eu-west-1")
        defer { db.close() }
        try Schema.migrate(db, table: table)
        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: seed)
        w.generate(sessions: 15, messages: 600)
        var rng = SplitMix64(seed: seed * 31)
        let records = try w.events.enumerated().map { i, e in
            let value = Array(try JSONSerialization.data(withJSONObject: e.json))
            return DecodedRecord(record: RecordRef(topic: "t", partition: 0, offset: Int64(i), key: nil, value: value, timestampMs: 0),
                                 event: EventDecoder.decode(value))
        }
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
        let rows = try db.query("""
            SELECT message_id::text, session_id, role, content, region,
                   to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), version FROM messages
            """).rows.map { r in
            Workload.Row(messageID: r[3]!.hasPrefix("seed ") ? "seed" : r[0]!, sessionID: r[1]!, role: r[2]!, content: r[3]!,
                         region: r[4]!, createdAt: r[5]!, version: Int(r[6]!)!)
        }.sorted()
        let expected = w.expectedRows(in: "eu-west-1")
        #expect(rows == expected, "\(Set(expected).subtracting(rows).count) missing, \(Set(rows).subtracting(expected).count) extra")
        #expect(rows.count > 100)
    }

    @Test("A dry run classifies and writes nothing")
    func dryRunWritesNothing() throws {
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let table = try TableName(validating: "messages")
        let db = try dbs.connect("eu-west-1")
        defer { db.close() }
        try Schema.migrate(db, table: table)
        var w = Workload(origins: ["us-east-1", "ap-southeast-1"], seed: 11)
        w.generate(sessions: 5, messages: 100)
        let records = try w.events.enumerated().map { i, e in
            let value = Array(try JSONSerialization.data(withJSONObject: e.json))
            return DecodedRecord(record: RecordRef(topic: "t", partition: 0, offset: Int64(i), key: nil, value: value, timestampMs: 0),
                                 event: EventDecoder.decode(value))
        }
        let applier = RegionApplier(region: "eu-west-1", table: table, applyToOrigin: false)
        let dry = try applier.apply(records, progress: [PartitionProgress(partition: 0, nextOffset: 100, lastRecordMs: nil)],
                                    consumerGroup: "g", topic: "t", on: db, dryRun: true)
        #expect(try db.query("SELECT count(*) FROM messages").rows[0][0] == "0")
        #expect(try db.query("SELECT count(*) FROM replicator_offsets").rows[0][0] == "0")
        let real = try applier.apply(records, progress: [], consumerGroup: nil, topic: "t", on: db)
        #expect(dry.counts == real.counts)
        #expect(real.counts[.applied] > 0)
    }
}
