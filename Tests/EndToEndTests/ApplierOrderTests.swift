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
}
