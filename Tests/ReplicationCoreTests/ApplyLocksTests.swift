import Foundation
import Testing
@testable import ReplicationCore

@Suite("ApplyLocks: the advisory keys a writing transaction takes")
struct ApplyLocksTests {
    let t0 = Timestamp(microseconds: 1_795_000_000_000_000)

    func upsert(partition: Int32, id: UUID) -> DecodedRecord {
        DecodedRecord(record: RecordRef(topic: "t", partition: partition, offset: 0, key: nil, value: nil, timestampMs: 1000),
                      event: .success(.messageUpserted(MessageUpsert(messageID: id, sessionID: "s", role: .user, content: "c",
                                                                     originRegion: "us-east-1", createdAt: t0, version: 1))))
    }

    @Test("The older builds' key of every partition involved, exclusive, first, in ascending partition order")
    func olderPartitionKeysFirst() {
        let records = [upsert(partition: 5, id: UUID()), upsert(partition: 2, id: UUID())]
        let plan = ApplyPlan(records: records, region: "eu-west-1", applyToOrigin: false)
        let locks = ApplyLocks(plan: plan, partitions: [4, 2], recordPartitions: records.map(\.record.partition)).sorted
        let older = locks.prefix { $0.key.space == .legacyPartitions }
        #expect(older.map(\.key.number) == [2, 4, 5])
        #expect(older.allSatisfy { $0.exclusive })
        // Then this version's own keys: the offsets of the partitions stored, then the row buckets.
        #expect(locks.dropFirst(3).prefix { $0.key.space == .offsets }.map(\.key.number) == [2, 4])
        #expect(locks.last?.key.space == .rows)
    }

    @Test("A replay-style transaction (no offsets stored) still takes its records' partitions' older keys")
    func replayTakesOlderKeys() {
        let records = [upsert(partition: 1, id: UUID())]
        let plan = ApplyPlan(records: records, region: "eu-west-1", applyToOrigin: false)
        let locks = ApplyLocks(plan: plan, partitions: [Int32](), recordPartitions: records.map(\.record.partition)).sorted
        #expect(locks.filter { $0.key.space == .legacyPartitions }.map(\.key.number) == [1])
        #expect(!locks.contains { $0.key.space == .offsets })
    }

    @Test("Buckets hash with FNV-1a 64 (its published test vectors): every writer of every version computes the same ones")
    func fnv1aVectors() {
        #expect(FNV1a.hash("".utf8) == 0xCBF2_9CE4_8422_2325)
        #expect(FNV1a.hash("a".utf8) == 0xAF63_DC4C_8601_EC8C)
        #expect(FNV1a.hash("foobar".utf8) == 0x8594_4171_F739_67E8)
        #expect(ApplyLocks.fnv1a(tag: UInt8(ascii: "s"), "ession-42".utf8) == FNV1a.hash("session-42".utf8))
    }
}
