public import KafkaClient

/// Where a partition's next record must start, as one region's pipeline knows it.
public enum NextOffset: Sendable, Hashable, CustomStringConvertible {
    /// Assigned, but the region's stored offset is not read yet: nothing of it may be applied.
    case unresolved
    /// The region stores no offset for the partition: start at its first record, once the
    /// broker's low watermark says which offset that is (no record is accepted before).
    case beginning
    /// Exactly this offset.
    case at(Int64)

    public var description: String {
        switch self {
        case .unresolved: "unresolved"
        case .beginning: "beginning"
        case .at(let n): String(n)
        }
    }
}

/// A fetch position to seek a partition to.
public enum SeekTarget: Sendable, Hashable {
    case offset(Int64)
}

/// What the pipeline must do after an event of ``PartitionBookkeeping``.
public enum BookkeepingAction: Sendable, Hashable {
    /// Move the partition's fetch position. When librdkafka refuses it, report that with
    /// ``PartitionBookkeeping/seekFailed(partition:)`` before anything else happens.
    case seek(partition: Int32, to: SeekTarget)
    /// Stop fetching these partitions.
    case pause([Int32])
    /// Fetch these partitions again (each was sought first).
    case resume([Int32])
    /// Ask the broker for the partition's low watermark and report it with
    /// ``PartitionBookkeeping/lowWatermark(partition:_:)`` (or
    /// ``PartitionBookkeeping/lowWatermarkUnavailable(partition:)``): records skipped over are
    /// only accepted as gone when it proves them gone, and a partition the region stores
    /// nothing for starts there.
    case queryLowWatermark(partition: Int32)
    /// Records `from..<to` of the partition are no longer in the topic (retention deleted them
    /// before they were applied): log them and count them as `gone`.
    case gone(partition: Int32, from: Int64, to: Int64)
    /// Offsets `from..<to` hold no record the broker serves (compaction, transaction markers):
    /// a fetch from `from` starts at `to` (or ends there). Nothing is lost.
    case noRecords(partition: Int32, from: Int64, to: Int64)
    /// A record arrived with an offset no Kafka log holds (negative, or `Int64.max`, after which
    /// no next offset exists): it was not accepted. Log it.
    case unusableOffset(partition: Int32, offset: Int64)
}

/// One region pipeline's partition bookkeeping: which partitions it owns, where each must
/// continue, which are paused, and the records read but not applied yet. Pure: events in,
/// actions out; `RegionPipeline` performs the actions (librdkafka, the region's database).
///
/// The invariant: progress is never stored across a gap. The next record accepted for a
/// partition is exactly its next offset (the stored one, the low watermark when the region
/// stores none, or the one after the last record accepted), unless the broker's low watermark
/// proves the records in between gone (then they are reported,
/// ``BookkeepingAction/gone(partition:from:to:)``), or two fetches from that offset, the
/// second after a seek librdkafka took, start (or end) at the same later offset (no record
/// exists there). Anything else is dropped and the partition is sought back to its next offset.
/// Every seek is assumed taken unless ``seekFailed(partition:)`` says otherwise: a partition
/// whose seek was refused reads nothing until ``retryPositioning()`` has sought it again.
public struct PartitionBookkeeping: Sendable {
    struct Gap: Sendable, Hashable {
        /// The offset the partition must continue at.
        var expected: Int64
        /// The first offset delivered instead.
        var seen: Int64
        /// `seen` is the end of the partition (no record was delivered).
        var seenEnd = false
        /// The low watermark did not cover the gap and the partition was sought to `expected` again.
        var resought = false
    }

    struct Partition: Sendable, Hashable {
        /// The next offset stored in the region's database, as far as the pipeline knows.
        var committed: NextOffset = .unresolved
        /// The next offset to accept into `pending`.
        var accept: NextOffset = .unresolved
        var gap: Gap? = nil
        /// Its last seek was refused, or the low watermark it starts at could not be read: its
        /// fetch position is unknown, so nothing it delivers is taken until it is sought again.
        var unpositioned = false
        /// The end of the partition was proven to follow the last record accepted, past offsets
        /// holding no record (transaction markers): the next offset to store, record or not.
        var endsAt: Int64? = nil
    }

    var partitions: [Int32: Partition] = [:]
    /// Partitions whose fetching is paused (unresolved ones, those waiting for their low
    /// watermark, and every one during a retry).
    public internal(set) var paused: Set<Int32> = []
    /// Records accepted and not applied yet, in arrival order (offsets rise within a partition).
    public internal(set) var pending: [KafkaRecord] = []
    /// Σ key and value bytes of `pending`.
    public internal(set) var pendingBytes = 0
    /// A batch failed and is being retried: every owned partition stays paused until it applies.
    public internal(set) var retrying = false

    public init() {}

    // MARK: - Queries

    /// The owned partitions.
    public var owned: Set<Int32> { Set(partitions.keys) }

    /// Some owned partition waits for the region's stored offsets (``positionsResolved(stored:)``).
    public var needsStoredOffsets: Bool { partitions.values.contains { $0.committed == .unresolved } }

    /// The stored next offset the pipeline believes for `partition` (nil when not owned).
    public func committed(_ partition: Int32) -> NextOffset? { partitions[partition]?.committed }

    /// Some owned partition must be sought again (its seek was refused) or still needs its low
    /// watermark: call ``retryPositioning()`` after a pause.
    public var needsPositioning: Bool { partitions.values.contains { $0.unpositioned } }

    /// Some partition's next offset to store moved past offsets that hold no record (markers
    /// at its end) while none of its records is pending: a batch without records stores it.
    public var hasProgressWithoutRecords: Bool {
        partitions.contains { p, part in part.endsAt != nil && !pending.contains { $0.partition == p } }
    }

    /// The next offsets to store when the first `count` pending records commit: after each
    /// partition's last record among them, or, when none of its records stays pending, where
    /// the partition was proven to end (past transaction markers).
    public func progress(forFirst count: Int) -> [PartitionProgress] {
        let n = max(0, min(count, pending.count))
        var out: [Int32: PartitionProgress] = [:]
        for r in pending.prefix(n) {
            let next = r.offset + 1
            if let p = out[r.partition], p.nextOffset >= next { continue }
            out[r.partition] = PartitionProgress(partition: r.partition, nextOffset: next, lastRecordMs: r.timestampMs)
        }
        let stillPending = Set(pending.dropFirst(n).map(\.partition))
        for (p, part) in partitions where !stillPending.contains(p) {
            guard let end = part.endsAt, end > (out[p]?.nextOffset ?? Int64.min) else { continue }
            out[p] = PartitionProgress(partition: p, nextOffset: end, lastRecordMs: out[p]?.lastRecordMs)
        }
        return out.values.sorted { $0.partition < $1.partition }
    }

    /// The stored next offsets the region must hold for `partitions` when a batch of them
    /// commits (nil: no row); unresolved partitions are left out.
    public func expectedStored(for partitions: some Sequence<Int32>) -> [Int32: Int64?] {
        var out: [Int32: Int64?] = [:]
        for p in partitions {
            switch self.partitions[p]?.committed {
            case .at(let n)?: out[p] = .some(n)
            case .beginning?: out[p] = .some(nil)
            case .unresolved?, nil: continue
            }
        }
        return out
    }

    // MARK: - Rebalance (no I/O: called inside librdkafka's callback)

    /// Partitions were assigned. Returns the partitions to pause at once: all of them, until
    /// their stored offsets are read (``positionsResolved(stored:)``).
    public mutating func assigned(_ parts: [Int32]) -> [Int32] {
        for p in parts {
            dropPending(of: p)
            partitions[p] = Partition()
            paused.insert(p)
        }
        return parts
    }

    /// Partitions were revoked (or lost): their pending records are dropped.
    public mutating func revoked(_ parts: [Int32]) {
        for p in parts {
            dropPending(of: p)
            partitions[p] = nil
            paused.remove(p)
        }
    }

    // MARK: - Positions

    /// The region's stored next offsets were read: unresolved partitions start there, or, when
    /// the region stores none, at the low watermark asked for. Outside a retry they are sought
    /// and resumed (those waiting for their low watermark once it is known).
    public mutating func positionsResolved(stored: [Int32: Int64]) -> [BookkeepingAction] {
        var resolved: [Int32] = []
        for (p, var part) in partitions where part.committed == .unresolved {
            let start: NextOffset = stored[p].map { .at($0) } ?? .beginning
            part.committed = start
            part.accept = Self.readStart(start)
            part.gap = nil
            part.endsAt = nil
            partitions[p] = part
            resolved.append(p)
        }
        guard !retrying else { return [] }  // they stay paused until the retried batch applies
        return resumeAt(resolved.sorted())
    }

    /// A batch was refused because the region's stored offsets are not the ones the pipeline
    /// believed (a restore, a manual reset, another writer): the stored ones win. Every pending
    /// record is dropped and every resolved partition is sought to its stored offset; a retry
    /// episode ends (the database answered).
    public mutating func storedOffsetsMoved(stored: [Int32: Int64]) -> [BookkeepingAction] {
        pending.removeAll()
        pendingBytes = 0
        retrying = false
        var ready: [Int32] = []
        for (p, var part) in partitions where part.committed != .unresolved {
            let start: NextOffset = stored[p].map { .at($0) } ?? .beginning
            part.committed = start
            part.accept = Self.readStart(start)
            part.gap = nil
            part.endsAt = nil
            partitions[p] = part
            ready.append(p)
        }
        return resumeAt(ready.sorted(), forceSeek: true)
    }

    // MARK: - Applying

    /// Applying failed and will be retried: every owned partition is paused until it succeeds
    /// (records still in flight are dropped and re-read from the partition's next offset).
    public mutating func applyFailed() -> [BookkeepingAction] {
        guard !retrying else { return [] }
        retrying = true
        let toPause = owned.subtracting(paused).sorted()
        paused.formUnion(toPause)
        return toPause.isEmpty ? [] : [.pause(toPause)]
    }

    /// The first `count` pending records committed, storing `progress`. Ends a retry episode:
    /// paused, resolved partitions are sought to their next offset and resumed.
    public mutating func applySucceeded(count: Int, progress: [PartitionProgress]) -> [BookkeepingAction] {
        let n = min(count, pending.count)
        for r in pending.prefix(n) { pendingBytes -= (r.key?.count ?? 0) + (r.value?.count ?? 0) }
        pending.removeFirst(n)
        for p in progress {
            guard var part = partitions[p.partition] else { continue }
            part.committed = .at(p.nextOffset)
            if let end = part.endsAt, p.nextOffset >= end { part.endsAt = nil }
            partitions[p.partition] = part
        }
        guard retrying else { return [] }
        retrying = false
        let ready = paused.filter { partitions[$0]?.committed != .unresolved }.sorted()
        return resumeAt(ready)
    }

    /// A retry episode ended without an apply (every pending record's partition was revoked):
    /// paused, resolved partitions are sought and resumed.
    public mutating func retryEnded() -> [BookkeepingAction] {
        guard retrying else { return [] }
        retrying = false
        return resumeAt(paused.filter { partitions[$0]?.committed != .unresolved }.sorted())
    }

    /// The pending records are abandoned (stopping, or dead letters decided elsewhere): each
    /// partition continues at its stored offset again.
    public mutating func abandonPending() {
        pending.removeAll()
        pendingBytes = 0
        for (p, var part) in partitions {
            part.accept = Self.readStart(part.committed)
            part.gap = nil
            part.endsAt = nil
            partitions[p] = part
        }
    }

    // MARK: - Helpers

    /// Where reading continues for a stored next offset. A negative one — the daemon never
    /// stores one; a manual edit or a hostile reply of the region's database — reads as "from the
    /// partition's beginning" (librdkafka would take -1 for the log's end and skip records); the
    /// version guard makes the re-applied events no-ops. It stays the expected stored offset of
    /// the next batch, which then replaces it.
    static func readStart(_ stored: NextOffset) -> NextOffset {
        if case .at(let n) = stored, n < 0 { return .beginning }
        return stored
    }

    /// Seeks `parts` to their next offset to accept and resumes them; those starting at their
    /// beginning ask for their low watermark first (``lowWatermark(partition:_:)`` resumes them).
    mutating func resumeAt(_ parts: [Int32], forceSeek: Bool = false) -> [BookkeepingAction] {
        var actions: [BookkeepingAction] = []
        var queries: [BookkeepingAction] = []
        var resumed: [Int32] = []
        for p in parts {
            guard let part = partitions[p] else { continue }
            switch part.accept {
            case .unresolved: continue
            case .beginning:
                queries.append(.queryLowWatermark(partition: p))
                continue
            case .at(let n): actions.append(seek(p, to: n))
            }
            if paused.remove(p) != nil { resumed.append(p) }
        }
        if !forceSeek && resumed.isEmpty { return queries }
        if !resumed.isEmpty { actions.append(.resume(resumed)) }
        return actions + queries
    }

    /// A seek action, assumed taken: the partition's position is known again unless
    /// ``seekFailed(partition:)`` follows.
    mutating func seek(_ p: Int32, to offset: Int64) -> BookkeepingAction {
        partitions[p]?.unpositioned = false
        return .seek(partition: p, to: .offset(offset))
    }

    private mutating func dropPending(of p: Int32) {
        guard pending.contains(where: { $0.partition == p }) else { return }
        pending.removeAll { r in
            guard r.partition == p else { return false }
            pendingBytes -= (r.key?.count ?? 0) + (r.value?.count ?? 0)
            return true
        }
        if var part = partitions[p] {
            part.accept = Self.readStart(part.committed)
            part.endsAt = nil
            partitions[p] = part
        }
    }
}
