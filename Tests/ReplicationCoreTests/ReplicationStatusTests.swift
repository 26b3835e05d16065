import Foundation
import Testing
@testable import ReplicationCore

@Suite("ReplicationStatus: lag seconds are computed, never guessed low")
struct ReplicationStatusTests {
    let now = 1_800_000_000.0

    func status() -> ReplicationStatus {
        let s = ReplicationStatus(topic: "t", regions: ["eu"])
        s.watermarks(region: "eu", [0: 10_000], at: now)
        return s
    }

    @Test("A region catching up, the oldest unapplied record not peeked yet: the age of the last applied record, not the time since the last commit")
    func catchingUpBeforeThePeek() {
        let s = status()
        // The pipeline just committed a batch (1 ms ago) whose last record was produced 30 s ago.
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 4_000,
                                                               lastRecordMs: Int64((now - 30) * 1000))],
                    at: now - 0.001)
        let lag = s.snapshot(now: now).regions[0]
        #expect(lag.lagEvents == 6_000)
        #expect(lag.lagSeconds >= 29.999 && lag.lagSeconds <= 30.001, "lag_seconds \(lag.lagSeconds)")
    }

    @Test("Once the oldest unapplied record is peeked, its own timestamp is the figure")
    func peekedRecordWins() {
        let s = status()
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 4_000,
                                                               lastRecordMs: Int64((now - 30) * 1000))],
                    at: now - 0.001)
        s.oldestUnapplied(region: "eu", partition: 0, offset: 4_000, timestampMs: Int64((now - 29.5) * 1000), at: now)
        #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 29.5) < 0.001)
    }

    @Test("Offsets moved back by a restore: the last applied timestamp no longer bounds the lag")
    func restoreForgetsTheBound() {
        let s = status()
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 9_000,
                                                               lastRecordMs: Int64((now - 1) * 1000))],
                    at: now - 0.5)
        s.storedOffsetsMoved(region: "eu", [0: 2_000])
        s.oldestUnapplied(region: "eu", partition: 0, offset: 2_000, timestampMs: Int64((now - 300) * 1000), at: now)
        let lag = s.snapshot(now: now).regions[0]
        #expect(lag.lagEvents == 8_000)
        #expect(abs(lag.lagSeconds - 300) < 0.001)
    }

    @Test("The oldest unapplied record stamped in the future (ns for ms, 2^62, Int64.max, a clock a year ahead): the lag counts from when it was read, never 0")
    func futureStampedOldest() {
        for ts: Int64 in [Int64(now * 1000) * 1_000_000, 1 << 62, .max, Int64((now + 31_536_000) * 1000)] {
            let s = status()
            s.oldestUnapplied(region: "eu", partition: 0, offset: 0, timestampMs: ts, at: now - 2)
            #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 2) < 0.001, "timestamp \(ts)")
            #expect(abs(s.snapshot(now: now + 5).regions[0].lagSeconds - 7) < 0.001, "timestamp \(ts)")
            // Read again later (another batch attempt): the first reading stays.
            s.oldestUnapplied(region: "eu", partition: 0, offset: 0, timestampMs: ts, at: now)
            #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 2) < 0.001, "timestamp \(ts)")
        }
    }

    @Test("A timestamp far in the past is bounded by the last sample that found the partition caught up; one in the future bounds nothing")
    func pastStampBoundedAndFutureLastAppliedIgnored() {
        let s = ReplicationStatus(topic: "t", regions: ["eu"])
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 100, lastRecordMs: .max)], at: now - 10)
        s.watermarks(region: "eu", [0: 100], at: now - 3)  // caught up
        s.watermarks(region: "eu", [0: 101], at: now - 1)  // one new record, not read yet
        // Not the Int64.max timestamp of the last applied record (that would read 0): the sample.
        #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 3) < 0.001)
        s.oldestUnapplied(region: "eu", partition: 0, offset: 100, timestampMs: 1, at: now - 0.5)
        #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 3) < 0.001, "not 56 years: appended after the caught-up sample")
    }

    @Test("Watermarks and stored offsets at the ends of Int64 (a hostile broker or database): lag saturates, nothing traps")
    func extremeOffsetsSaturate() {
        let s = ReplicationStatus(topic: "t", regions: ["eu"])
        s.storedOffsets(region: "eu", [0: -5, 1: .min], problem: nil)
        s.watermarks(region: "eu", [0: .max, 1: .max, 2: .max], low: [0: .max, 1: .max], at: now)
        let r = s.snapshot(now: now).regions[0]
        #expect(r.lagEvents == .max && r.expiredEvents == .max)
        #expect(r.partitions.map(\.lagEvents) == [.max, .max, .max])
        #expect(r.lagSeconds.isFinite && r.lagSeconds >= 0)
        let odd = s.snapshot(now: .nan).regions[0]
        #expect(odd.lagEvents == .max)
    }

    @Test("Caught up: 0, whatever timestamps were seen")
    func caughtUp() {
        let s = status()
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 10_000,
                                                               lastRecordMs: Int64((now - 30) * 1000))],
                    at: now - 10)
        #expect(s.snapshot(now: now).regions[0].lagSeconds == 0)
    }

    @Test("Several pipelines per region: up only when every one connected and none fails; one's commit never clears another's failure")
    func severalPipelinesPerRegion() {
        let names = PipelineSettings.loopNames(connections: 2)
        #expect(names == ["pipeline-1", "pipeline-2"])
        #expect(PipelineSettings.loopNames(connections: 1) == ["pipeline"])
        let s = ReplicationStatus(topic: "t", regions: ["eu"], pipelines: names)
        s.watermarks(region: "eu", [0: 10, 1: 10], at: now)
        s.pipelineDatabase(region: "eu", pipeline: "pipeline-1", connected: true, problem: nil)
        #expect(!s.snapshot(now: now).ready, "pipeline-2 has not connected yet")
        #expect(!s.snapshot(now: now).regions[0].up)
        s.pipelineDatabase(region: "eu", pipeline: "pipeline-2", connected: true, problem: nil)
        s.storedOffsets(region: "eu", [:], problem: nil)
        #expect(s.snapshot(now: now).ready)
        #expect(s.snapshot(now: now).regions[0].up)

        s.pipelineDatabase(region: "eu", pipeline: "pipeline-2", connected: false, problem: "read-only")
        s.committed(region: "eu", pipeline: "pipeline-1", progress: [PartitionProgress(partition: 0, nextOffset: 5, lastRecordMs: nil)],
                    at: now)
        let failing = s.snapshot(now: now).regions[0]
        #expect(!failing.up)
        #expect(failing.problem == "pipeline-2: read-only")
        s.committed(region: "eu", pipeline: "pipeline-2", progress: [PartitionProgress(partition: 1, nextOffset: 5, lastRecordMs: nil)],
                    at: now)
        #expect(s.snapshot(now: now).regions[0].up)

        // Assignments are each pipeline's; the region shows their union. A revocation by one
        // arriving after the other's assignment of the same partition keeps it assigned.
        s.assignment(region: "eu", pipeline: "pipeline-1", assigned: [0, 1])
        s.assignment(region: "eu", pipeline: "pipeline-2", assigned: [1])
        s.assignment(region: "eu", pipeline: "pipeline-1", revoked: [1])
        #expect(s.snapshot(now: now).regions[0].assignedPartitions == [0, 1])
        // Each pipeline's heartbeat is watched on its own (an overdue one is named).
        s.heartbeat(region: "eu", loop: "pipeline-1", timeout: .seconds(90))
        s.heartbeat(region: "eu", loop: "pipeline-2", timeout: .seconds(-1))
        #expect(s.snapshot(now: now).stalledLoops == ["eu/pipeline-2"])
    }

    @Test("Idle and caught up, then behind before the new record is read: bounded by the last sample that found it caught up, not by the older last applied record")
    func behindAfterAnIdleSpell() {
        let s = ReplicationStatus(topic: "t", regions: ["eu"])
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 100,
                                                               lastRecordMs: Int64((now - 60) * 1000))],
                    at: now - 59)
        s.watermarks(region: "eu", [0: 100], at: now - 1)   // caught up, idle for a minute
        s.watermarks(region: "eu", [0: 103], at: now - 0.5) // three new records, none read yet
        let bound = s.snapshot(now: now).regions[0]
        #expect(bound.lagEvents == 3)
        #expect(abs(bound.lagSeconds - 1) < 0.001, "lag_seconds \(bound.lagSeconds), not the 60 s of the last applied record")
        // The record itself (the pipeline holds it, or the monitor peeked it) is the figure.
        s.oldestUnapplied(region: "eu", partition: 0, offset: 100, timestampMs: Int64((now - 0.7) * 1000), at: now)
        #expect(abs(s.snapshot(now: now).regions[0].lagSeconds - 0.7) < 0.001)
        // A region that stays down: the figure grows with the clock.
        #expect(abs(s.snapshot(now: now + 5).regions[0].lagSeconds - 5.7) < 0.001)
    }

    @Test("Offsets moved back by a restore: a caught-up sample from before the restore no longer bounds the lag")
    func restoreForgetsTheCaughtUpSample() {
        let s = ReplicationStatus(topic: "t", regions: ["eu"])
        s.committed(region: "eu", progress: [PartitionProgress(partition: 0, nextOffset: 100, lastRecordMs: nil)],
                    at: now - 100)
        s.watermarks(region: "eu", [0: 100], at: now - 1)
        s.storedOffsetsMoved(region: "eu", [0: 40])
        let lag = s.snapshot(now: now).regions[0]
        #expect(lag.lagEvents == 60)
        // Nothing bounds the 60 unapplied records' age but the last commit, 100 s ago.
        #expect(abs(lag.lagSeconds - 100) < 0.001, "lag_seconds \(lag.lagSeconds)")
    }
}
