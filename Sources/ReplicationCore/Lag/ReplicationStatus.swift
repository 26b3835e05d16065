import Foundation
import Synchronization

/// One partition's position in one region.
public struct PartitionLag: Sendable, Hashable, Codable {
    public var partition: Int32
    /// The next offset the region will apply (stored in the region's database).
    public var nextOffset: Int64
    public var highWatermark: Int64
    /// max(0, highWatermark − nextOffset).
    public var lagEvents: Int64
    /// The first offset the broker still holds (retention deleted the records below it).
    public var lowWatermark: Int64 = 0
    /// max(0, lowWatermark − nextOffset): records retention deleted before the region applied
    /// them. They can never be applied; the pipeline passes over them (and counts them) when
    /// it reaches the gap.
    public var expiredEvents: Int64 = 0

    public init(partition: Int32, nextOffset: Int64, highWatermark: Int64, lagEvents: Int64,
                lowWatermark: Int64 = 0, expiredEvents: Int64 = 0) {
        self.partition = partition
        self.nextOffset = nextOffset
        self.highWatermark = highWatermark
        self.lagEvents = lagEvents
        self.lowWatermark = lowWatermark
        self.expiredEvents = expiredEvents
    }

    enum CodingKeys: String, CodingKey {
        case partition
        case nextOffset = "next_offset"
        case highWatermark = "high_watermark"
        case lagEvents = "lag_events"
        case lowWatermark = "low_watermark"
        case expiredEvents = "expired_events"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        partition = try c.decode(Int32.self, forKey: .partition)
        nextOffset = try c.decode(Int64.self, forKey: .nextOffset)
        highWatermark = try c.decode(Int64.self, forKey: .highWatermark)
        lagEvents = try c.decode(Int64.self, forKey: .lagEvents)
        // Absent in the `/lag` of older daemons.
        lowWatermark = try c.decodeIfPresent(Int64.self, forKey: .lowWatermark) ?? 0
        expiredEvents = try c.decodeIfPresent(Int64.self, forKey: .expiredEvents) ?? 0
    }
}

/// One region as an SRE sees it (the `/lag` body and the metrics).
public struct RegionLag: Sendable, Hashable {
    public var region: String
    /// The region's database accepts writes and its pipeline runs.
    public var up: Bool
    /// Why the region is not up (no secrets), nil when up.
    public var problem: String?
    public var lagEvents: Int64
    /// Σ over partitions of `expiredEvents`: records deleted by retention before the region
    /// applied them (part of `lagEvents`, but they will never be applied).
    public var expiredEvents: Int64 = 0
    /// Age of the oldest produced-but-unapplied event; 0 when caught up.
    public var lagSeconds: Double
    /// Unix time T: every event with a Kafka timestamp ≤ T is applied (= now − lagSeconds).
    public var replicatedThrough: Double
    /// Unix time of the last committed batch, if any since start.
    public var lastApply: Double?
    /// Unix time the high watermarks behind these figures were read (nil: never).
    public var sampledAt: Double?
    public var partitions: [PartitionLag]
    /// Partitions this instance's consumer owns for the region now (several instances share
    /// each region's consumer group; every partition is owned by exactly one of them).
    public var assignedPartitions: [Int32] = []
    /// Records of the region's partitions deleted from the topic (retention) before this
    /// instance applied them, since start (the `gone` outcome).
    public var gone: Int64 = 0
}

/// A point-in-time copy of everything the HTTP endpoint and systemd notifications report.
public struct ReplicationSnapshot: Sendable {
    public var topic: String
    public var kafkaOK: Bool
    public var kafkaProblem: String?
    public var regions: [RegionLag]
    /// Every region pipeline has connected once, verified its schema, and Kafka answered.
    public var ready: Bool
    /// Loops (pipelines, monitors) that have not reported progress within their own timeout.
    public var stalledLoops: [String]
}

/// Shared, thread-safe state that pipelines and lag monitors write and readers snapshot.
///
/// A small state machine under a `Mutex`: writers record facts (heartbeats, commits,
/// watermarks, database health); ``snapshot(now:)`` derives the figures. Time-dependent
/// figures (`lagSeconds`) are computed at snapshot time from the timestamp of the oldest
/// unapplied record, so they grow in real time even when every input is stuck.
public final class ReplicationStatus: Sendable {
    /// What one of a region's pipelines (`apply.connections` of them) last reported.
    struct Pipeline {
        var connected = false
        var failing: String? = nil
        var assigned: Set<Int32> = []
    }

    /// The oldest unapplied record of a partition, as read.
    struct Oldest {
        var offset: Int64
        var ms: Int64?
        var seenMs: Int64
    }

    struct Region {
        /// The region's pipelines by loop name; the region is connected when every expected
        /// one has connected once, and failing while any of them fails.
        var pipelines: [String: Pipeline] = [:]
        var expectedPipelines: [String] = []
        var monitorDatabase: String? = "not checked yet"
        var next: [Int32: Int64] = [:]
        var high: [Int32: Int64] = [:]
        var low: [Int32: Int64] = [:]
        var sampledAt: Double? = nil
        var kafkaProblem: String? = nil
        /// The record at `next[p]` once read: its offset, its Kafka timestamp (ms, as sent: any
        /// value, nil when it has none) and when this process first read it (unix ms).
        var oldest: [Int32: Oldest] = [:]
        /// Kafka timestamp (ms) of the last record this process saw applied, per partition.
        var lastAppliedMs: [Int32: Int64] = [:]
        /// When a watermark sample last found the partition caught up (unix ms): every record
        /// unapplied since was appended after it.
        var caughtUpMs: [Int32: Int64] = [:]
        var lastApply: Double? = nil
        var gone: Int64 = 0
        var heartbeats: [String: (at: ContinuousClock.Instant, timeout: Duration)] = [:]
    }

    public let topic: String
    public let regionNames: [String]
    private let state: Mutex<[String: Region]>
    private let kafkaReachable = Atomic<Bool>(false)
    /// Called with the region's name after each committed batch (``onCommit(_:)``).
    private let commitObservers = Mutex<[@Sendable (String) -> Void]>([])

    /// - Parameter pipelines: the loop names of each region's pipelines
    ///   (``PipelineSettings/loopNames(connections:)``).
    public init(topic: String, regions: [String], pipelines: [String] = PipelineSettings.loopNames(connections: 1)) {
        self.topic = topic
        self.regionNames = regions
        var region = Region()
        region.expectedPipelines = pipelines
        self.state = Mutex(Dictionary(uniqueKeysWithValues: regions.map { ($0, region) }))
    }

    private func update(_ region: String, _ body: (inout Region) -> Void) {
        state.withLock { regions in
            if var r = regions[region] {
                body(&r)
                regions[region] = r
            }
        }
    }

    // MARK: - Writers

    /// A loop says it is alive and will report again within `timeout` (watchdog input).
    public func heartbeat(region: String, loop: String, timeout: Duration) {
        let now = ContinuousClock.now
        update(region) { $0.heartbeats[loop] = (now, timeout) }
    }

    /// The pipeline connected to its database and verified the schema (or lost it: `problem`).
    public func pipelineDatabase(region: String, pipeline: String = PipelineSettings.soleLoopName, connected: Bool, problem: String?) {
        update(region) {
            if connected { $0.pipelines[pipeline, default: Pipeline()].connected = true }
            $0.pipelines[pipeline, default: Pipeline()].failing = problem
        }
    }

    /// The pipeline's consumer was given (`assigned`) or lost (`revoked`) partitions.
    public func assignment(region: String, pipeline: String = PipelineSettings.soleLoopName, assigned: [Int32] = [], revoked: [Int32] = []) {
        update(region) { r in
            r.pipelines[pipeline, default: Pipeline()].assigned.subtract(revoked)
            r.pipelines[pipeline, default: Pipeline()].assigned.formUnion(assigned)
        }
    }

    /// Records of `region` were found gone from the topic before they were applied.
    public func recordsGone(region: String, count: Int64) {
        update(region) { $0.gone += count }
    }

    /// The region's stored offsets were found moved (a restore, a manual reset, another
    /// writer): they replace what the pipeline had reported, backwards included.
    public func storedOffsetsMoved(region: String, _ next: [Int32: Int64]) {
        update(region) { r in
            for (p, n) in next {
                r.next[p] = n
                if let o = r.oldest[p], o.offset != n { r.oldest[p] = nil }
                r.lastAppliedMs[p] = nil  // moved back: older records are unapplied again
                r.caughtUpMs[p] = nil
            }
        }
    }

    /// A batch of `pipeline` committed: the region's next offsets moved, and that pipeline
    /// (only) is no longer failing.
    public func committed(region: String, pipeline: String = PipelineSettings.soleLoopName, progress: [PartitionProgress], at unix: Double) {
        update(region) { r in
            for p in progress {
                r.next[p.partition] = p.nextOffset
                if let o = r.oldest[p.partition], o.offset < p.nextOffset { r.oldest[p.partition] = nil }
                if let ms = p.lastRecordMs { r.lastAppliedMs[p.partition] = ms }
            }
            r.lastApply = unix
            r.pipelines[pipeline, default: Pipeline()].failing = nil
        }
        for observer in commitObservers.withLock({ $0 }) { observer(region) }
    }

    /// Registers `observer`, called (on the committing thread; it must not block) with the
    /// region's name after each batch this process commits: `/fresh` wakes its waiters by it.
    public func onCommit(_ observer: @escaping @Sendable (String) -> Void) {
        commitObservers.withLock { $0.append(observer) }
    }

    /// The monitor read the stored offsets from the region's database (or failed: `problem`).
    public func storedOffsets(region: String, _ next: [Int32: Int64]?, problem: String?) {
        update(region) { r in
            r.monitorDatabase = problem
            guard let next else { return }
            for (p, n) in next where n >= (r.next[p] ?? Int64.min) {
                r.next[p] = n
                if let o = r.oldest[p], o.offset < n { r.oldest[p] = nil }
            }
        }
    }

    /// Fresh watermarks of the topic (every partition), as read for `region`'s figures.
    public func watermarks(region: String, _ high: [Int32: Int64], low: [Int32: Int64] = [:], at unix: Double) {
        kafkaReachable.store(true, ordering: .relaxed)
        update(region) { r in
            r.high = high
            r.low = low
            r.sampledAt = unix
            r.kafkaProblem = nil
            for (p, h) in high where h <= (r.next[p] ?? 0) { r.caughtUpMs[p] = Int64.milliseconds(fromUnixSeconds: unix) }
        }
    }

    public func kafkaFailed(region: String, problem: String) {
        update(region) { $0.kafkaProblem = problem }
    }

    /// The record at `offset` in `partition` (the oldest unapplied one) was read at `unix`, with
    /// Kafka timestamp `timestampMs` (as sent, any value; nil: none). Reported again for the same
    /// offset, the first reading time stays.
    public func oldestUnapplied(region: String, partition: Int32, offset: Int64, timestampMs: Int64?, at unix: Double? = nil) {
        let seen = Int64.milliseconds(fromUnixSeconds: unix ?? Date().timeIntervalSince1970)
        update(region) { r in
            guard (r.next[partition] ?? 0) <= offset else { return }
            if let o = r.oldest[partition], o.offset == offset {
                r.oldest[partition] = Oldest(offset: offset, ms: timestampMs ?? o.ms, seenMs: min(o.seenMs, seen))
            } else {
                r.oldest[partition] = Oldest(offset: offset, ms: timestampMs, seenMs: seen)
            }
        }
    }

    // MARK: - Readers

    /// Partitions of `region` that are behind and whose oldest unapplied record's timestamp is
    /// not known yet: (partition, offset to read).
    public func unknownOldest(region: String) -> [(partition: Int32, offset: Int64)] {
        state.withLock { regions in
            guard let r = regions[region] else { return [] }
            return r.high.compactMap { p, h in
                let n = r.next[p] ?? 0
                guard h > n else { return nil }
                if let o = r.oldest[p], o.offset == n { return nil }
                return (p, n)
            }.sorted { $0.partition < $1.partition }
        }
    }

    /// The next offsets known for `region` (from its database or its pipeline's commits).
    public func nextOffsets(region: String) -> [Int32: Int64] {
        state.withLock { $0[region]?.next ?? [:] }
    }

    /// The oldest unapplied records known for `region`: partition → (offset, Kafka timestamp,
    /// first read at, unix ms). For the metadata fuzzer's checks.
    @_spi(Fuzzing) public func oldestRead(region: String) -> [Int32: (offset: Int64, timestampMs: Int64?, seenMs: Int64)] {
        state.withLock { ($0[region]?.oldest ?? [:]).mapValues { ($0.offset, $0.ms, $0.seenMs) } }
    }

    /// When the record at a lagging partition's next offset was produced, as far as this
    /// process can tell (unix ms): its Kafka timestamp, unless that is in the future (unknown
    /// then: the moment it was first read stands in), kept within what the process observed
    /// itself — appended after the last sample that found the partition caught up, and no later
    /// than the moment it was first read. So the lag it gives is never negative, never 0 while
    /// the record waits, and a wrong timestamp moves it only within those bounds.
    static func producedMs(_ o: Oldest, caughtUpMs: Int64?, nowMs: Int64) -> Int64 {
        var t = KafkaTimestamp.past(o.ms, nowMs: nowMs) ?? o.seenMs
        if let c = caughtUpMs { t = max(t, c) }
        return min(t, o.seenMs)
    }

    public func snapshot() -> ReplicationSnapshot { snapshot(now: Date().timeIntervalSince1970) }

    public func snapshot(now: Double) -> ReplicationSnapshot {
        let clock = ContinuousClock.now
        let nowMs = Int64.milliseconds(fromUnixSeconds: now)
        return state.withLock { regions in
            var stalled: [String] = []
            var ready = kafkaReachable.load(ordering: .relaxed)
            var kafkaProblem: String? = nil
            let out: [RegionLag] = regionNames.map { name in
                let r = regions[name]!
                for (loop, hb) in r.heartbeats where clock - hb.at > hb.timeout { stalled.append("\(name)/\(loop)") }
                let connected = r.expectedPipelines.allSatisfy { r.pipelines[$0]?.connected == true }
                if !connected { ready = false }
                // One failing pipeline makes the region not up; named when there are several.
                let failing = r.pipelines.sorted { $0.key < $1.key }.first { $0.value.failing != nil }.map { name, p in
                    r.expectedPipelines.count > 1 ? "\(name): \(p.failing!)" : p.failing!
                }
                if let p = r.kafkaProblem { kafkaProblem = p }
                var parts: [PartitionLag] = []
                var lagEvents: Int64 = 0
                var expiredEvents: Int64 = 0
                var oldestMs: Int64? = nil
                for (p, h) in r.high.sorted(by: { $0.key < $1.key }) {
                    // Watermarks come from the broker and next offsets from the region's database:
                    // saturating, never trapping, whatever either says.
                    let n = r.next[p] ?? 0
                    let lag = max(0, h.saturatingSubtracting(n))
                    lagEvents = lagEvents.saturatingAdding(lag)
                    let low = r.low[p] ?? 0
                    let expired = max(0, min(low, h).saturatingSubtracting(n))
                    expiredEvents = expiredEvents.saturatingAdding(expired)
                    parts.append(PartitionLag(partition: p, nextOffset: n, highWatermark: h, lagEvents: lag,
                                              lowWatermark: low, expiredEvents: expired))
                    guard lag > 0 else { continue }
                    if let o = r.oldest[p], o.offset == n {
                        let t = Self.producedMs(o, caughtUpMs: r.caughtUpMs[p], nowMs: nowMs)
                        oldestMs = min(oldestMs ?? t, t)
                    } else if let ms = [KafkaTimestamp.past(r.lastAppliedMs[p], nowMs: nowMs), r.caughtUpMs[p]].compactMap({ $0 }).max() {
                        // The record at `n` is not read yet (the pipeline reports the records it
                        // holds, the monitor peeks the others; a sample can come first). It is
                        // no older than the last record applied before it, nor than the last
                        // sample that found the partition caught up: the younger of the two is
                        // a bound, tight while records are dense, and at most one sample
                        // interval above the truth after an idle spell. (A last applied record
                        // stamped in the future bounds nothing.)
                        oldestMs = min(oldestMs ?? ms, ms)
                    }
                }
                var lagSeconds = 0.0
                if lagEvents > 0 {
                    if let oldestMs { lagSeconds = max(0, now - Double(oldestMs) / 1000) }
                    // Behind, but no timestamp is known yet: at least the time since the last
                    // commit (never 0 while behind).
                    else if let last = r.lastApply { lagSeconds = max(0, now - last) }
                }
                let problem = r.monitorDatabase ?? failing
                let assigned = r.pipelines.values.reduce(into: Set<Int32>()) { $0.formUnion($1.assigned) }
                return RegionLag(region: name, up: problem == nil && connected, problem: problem,
                                 lagEvents: lagEvents, expiredEvents: expiredEvents, lagSeconds: lagSeconds, replicatedThrough: now - lagSeconds,
                                 lastApply: r.lastApply, sampledAt: r.sampledAt, partitions: parts,
                                 assignedPartitions: assigned.sorted(), gone: r.gone)
            }
            return ReplicationSnapshot(topic: topic, kafkaOK: kafkaProblem == nil && kafkaReachable.load(ordering: .relaxed),
                                       kafkaProblem: kafkaProblem ?? (kafkaReachable.load(ordering: .relaxed) ? nil : "not reached yet"),
                                       regions: out, ready: ready, stalledLoops: stalled.sorted())
        }
    }
}
