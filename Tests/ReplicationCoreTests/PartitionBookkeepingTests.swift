import KafkaClient
import Testing
@testable import ReplicationCore

/// A tiny world for the bookkeeping: a topic whose partitions hold records at offsets
/// `low[p]..<end`, a consumer that fetches from per-partition positions (and, adversarially,
/// keeps delivering what it fetched before a pause or a seek), and a region database that
/// stores next offsets and refuses a batch whose partitions' stored offsets moved. Every
/// applied batch is checked: a partition's records must start exactly at its stored offset
/// (or where the low watermark proved the records in between gone) and be contiguous.
struct BookkeepingWorld {
    static let end: Int64 = 12
    var low: [Int32: Int64] = [0: 0, 1: 0, 2: 3]
    /// The consumer: assigned partitions with their fetch positions, paused ones, fetched records.
    var position: [Int32: Int64] = [:]
    var consumerPaused: Set<Int32> = []
    var queue: [KafkaRecord] = []
    /// Kafka's committed offsets (where an assignment starts fetching): may differ from the database's.
    var kafkaCommitted: [Int32: Int64] = [0: 9, 1: 9, 2: 0]
    /// The region's database.
    var stored: [Int32: Int64] = [0: 4, 1: 2, 2: 1]
    var book = PartitionBookkeeping()
    var gone: [Int32: [Range<Int64>]] = [:]
    var violations: [String] = []
    /// How many of the next seeks librdkafka refuses (the fetch position stays where it was).
    var failingSeeks = 0
    /// Offsets holding transaction markers (no record a reader gets), per partition.
    var markers: [Int32: Set<Int64>] = [:]
    /// The end of partition last reported since the last seek, per partition.
    var eofReported: [Int32: Int64] = [:]

    func isMarker(_ p: Int32, _ o: Int64) -> Bool { markers[p]?.contains(o) == true }

    func record(_ p: Int32, _ o: Int64) -> KafkaRecord {
        KafkaRecord(topic: "t", partition: p, offset: o, key: nil, value: [UInt8](repeating: 1, count: 10), timestampMs: nil)
    }

    mutating func perform(_ actions: [BookkeepingAction]) {
        for a in actions {
            switch a {
            case .seek(let p, _) where failingSeeks > 0:
                failingSeeks -= 1
                book.seekFailed(partition: p)  // the position stays where it was
            case .seek(let p, .offset(let n)):
                if position[p] != nil { position[p] = n; eofReported[p] = nil }
            case .pause(let ps): consumerPaused.formUnion(ps)
            case .resume(let ps): consumerPaused.subtract(ps)
            case .queryLowWatermark(let p): perform(book.lowWatermark(partition: p, low[p]!))
            case .gone(let p, let from, let to): gone[p, default: []].append(from..<to)
            case .noRecords(let p, let from, let to):
                if (from..<to).contains(where: { !isMarker(p, $0) && $0 >= low[p]! }) {
                    violations.append("no-records claimed for \(p) \(from)..<\(to), which holds records")
                }
            case .unusableOffset(let p, let o): violations.append("offset \(o) of \(p) called unusable in a log of ordinary offsets")
            }
        }
    }

    // MARK: Events

    mutating func assign(_ parts: [Int32]) {
        let pause = book.assigned(parts)
        for p in parts {
            position[p] = max(kafkaCommitted[p]!, low[p]!)
            // A fetch raced the pause: records from Kafka's committed offset are already queued.
            queue += (position[p]!..<min(Self.end, position[p]! + 2)).map { record(p, $0) }
        }
        consumerPaused.formUnion(pause)
    }

    mutating func revoke(_ parts: [Int32]) {
        book.revoked(parts)
        for p in parts { position[p] = nil; consumerPaused.remove(p) }
        queue.removeAll { parts.contains($0.partition) }
    }

    mutating func poll() {
        var ends: [TopicPartitionOffset] = []
        for (p, pos) in position.sorted(by: { $0.key < $1.key }) where !consumerPaused.contains(p) {
            let from = max(pos, low[p]!)
            let to = min(Self.end, from + 3)
            queue += (from..<to).filter { !isMarker(p, $0) }.map { record(p, $0) }
            position[p] = to
            if to == Self.end && eofReported[p] != to {
                eofReported[p] = to
                ends.append(TopicPartitionOffset(topic: "t", partition: p, offset: to))
            }
        }
        let delivered = queue
        queue.removeAll()
        perform(book.polled(delivered, ends: ends))
        if book.needsPositioning { perform(book.retryPositioning()) }  // the pipeline's timer, at once
    }

    mutating func resolve() {
        if book.needsStoredOffsets { perform(book.positionsResolved(stored: stored)) }
    }

    mutating func fail() {
        if !book.pending.isEmpty { perform(book.applyFailed()) }
    }

    /// Applies a chunk of at most `limit` pending records as the region's database would.
    mutating func applyOK(limit: Int = .max) {
        if book.pending.isEmpty && !book.hasProgressWithoutRecords {
            perform(book.retryEnded())
            return
        }
        let chunk = Array(book.pending.prefix(limit))
        let progress = book.progress(forFirst: chunk.count)
        // The transaction's check: the stored offsets must be the ones the pipeline believes.
        let expected = book.expectedStored(for: progress.map(\.partition))
        for (p, n) in expected where stored[p] != n {
            perform(book.storedOffsetsMoved(stored: stored))
            return
        }
        for p in Set(chunk.map(\.partition)) {
            let offsets = chunk.filter { $0.partition == p }.map(\.offset)
            let first = offsets[0]
            let start = stored[p] ?? low[p]!
            let proven = gone[p, default: []].contains { $0.lowerBound == start && $0.upperBound == first }
            if !proven && (start..<first).contains(where: { !isMarker(p, $0) && $0 >= low[p]! }) {
                violations.append("partition \(p): applied from \(first) while \(stored[p].map(String.init) ?? "nothing") is stored (log starts at \(low[p]!))")
            }
            for (a, b) in zip(offsets, offsets.dropFirst()) where (a + 1..<b).contains(where: { !isMarker(p, $0) }) {
                violations.append("partition \(p): gap \(a) → \(b) inside a batch")
            }
        }
        for pr in progress {
            let p = pr.partition
            let last = chunk.filter { $0.partition == p }.map(\.offset).max()
            // Stored past the last record applied only over markers.
            if let from = last.map({ $0 + 1 }) ?? stored[p], (from..<pr.nextOffset).contains(where: { !isMarker(p, $0) }) {
                violations.append("partition \(p): stores \(pr.nextOffset) past records from \(from)")
            }
            stored[p] = pr.nextOffset
        }
        perform(book.applySucceeded(count: chunk.count, progress: progress))
    }

    mutating func restore() { stored[0] = 1 }

    /// Drives the loop until every owned partition is applied to the end.
    mutating func drain() {
        for _ in 0..<200 {
            resolve()
            poll()
            applyOK()
            if book.pending.isEmpty && !book.needsStoredOffsets
                && book.owned.allSatisfy({ stored[$0] == Self.end }) { return }
        }
        violations.append("did not drain: stored \(stored), owned \(book.owned.sorted()), paused \(book.paused.sorted()), pending \(book.pending.count)")
    }

    static func started() -> BookkeepingWorld {
        var w = BookkeepingWorld()
        w.assign([0, 2])
        w.resolve()
        return w
    }
}

@Suite("PartitionBookkeeping: owned partitions, positions, pauses and pending records")
struct PartitionBookkeepingTests {
    enum Step: String, CaseIterable, CustomTestStringConvertible {
        case assign1, revoke0, poll, applyFailed, applyOK, resolve, restore, refuseSeeks
        var testDescription: String { rawValue }
    }

    static func run(_ steps: [Step], in w: inout BookkeepingWorld) {
        for s in steps {
            switch s {
            case .assign1: w.assign([1])
            case .revoke0: w.revoke([0])
            case .poll: w.poll()
            case .applyFailed: w.fail()
            case .applyOK: w.applyOK()
            case .resolve: w.resolve()
            case .restore: w.restore()
            case .refuseSeeks: w.failingSeeks += 2
            }
        }
    }

    static func permutations<T: Hashable>(_ items: [T]) -> [[T]] {
        guard items.count > 1 else { return [items] }
        var out: [[T]] = []
        for (i, x) in items.enumerated() where !items[..<i].contains(x) {
            var rest = items
            rest.remove(at: i)
            out += permutations(rest).map { [x] + $0 }
        }
        return out
    }

    @Test("Every interleaving of assign, revoke, poll, apply-failed, apply-ok and resolve: no gap is ever applied, everything owned is applied",
          arguments: [[Step.assign1, .revoke0, .poll, .poll, .applyFailed, .applyOK, .resolve],
                      [Step.assign1, .poll, .applyFailed, .poll, .applyOK, .resolve, .restore],
                      [Step.revoke0, .assign1, .applyFailed, .poll, .applyOK, .restore]])
    func everyInterleaving(_ steps: [Step]) {
        var failures: [String] = []
        let all = Self.permutations(steps)
        for order in all {
            var w = BookkeepingWorld.started()
            Self.run(order, in: &w)
            w.drain()
            if !w.violations.isEmpty { failures.append("\(order.map(\.rawValue)): \(w.violations)") }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(all.count) interleavings broke the invariant, e.g. \(failures.prefix(3))")
    }

    @Test("A partition assigned in the middle of a retry stays paused; once the batch applies it starts at its stored offset")
    func assignedMidRetry() {
        var w = BookkeepingWorld.started()
        w.poll()
        w.fail()
        #expect(w.book.retrying && w.book.paused == [0, 2])
        w.assign([1])  // Kafka's committed offset (9) is ahead of the database's (2)
        #expect(w.book.paused.contains(1))
        w.resolve()
        #expect(w.book.committed(1) == .at(2))
        #expect(w.book.paused.contains(1), "resolved during the retry: still paused")
        w.poll()  // the records fetched from 9 before the pause are dropped
        #expect(!w.book.pending.contains { $0.partition == 1 })
        w.applyOK()
        #expect(!w.book.retrying && w.book.paused.isEmpty)
        #expect(w.position[1] == 2, "sought to the stored offset")
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
        #expect(w.stored == [0: 12, 1: 12, 2: 12])
    }

    @Test("Records past a gap are refused; the low watermark proves records gone, which are reported")
    func goneRecordsAreReported() {
        var w = BookkeepingWorld()
        _ = w.book.assigned([2])
        #expect(w.book.positionsResolved(stored: [2: 1]) == [.seek(partition: 2, to: .offset(1)), .resume([2])])
        let actions = w.book.polled([w.record(2, 3), w.record(2, 4)])
        #expect(actions == [.seek(partition: 2, to: .offset(1)), .queryLowWatermark(partition: 2)])
        #expect(w.book.pending.isEmpty)
        #expect(w.book.lowWatermark(partition: 2, 3) == [.gone(partition: 2, from: 1, to: 3), .seek(partition: 2, to: .offset(3))])
        _ = w.book.polled([w.record(2, 3)])
        #expect(w.book.pending.map(\.offset) == [3])
    }

    @Test("A gap the low watermark does not explain: sought again; the same start again means no records there")
    func gapWithoutRetention() {
        var w = BookkeepingWorld()
        _ = w.book.assigned([0])
        _ = w.book.positionsResolved(stored: [0: 5])
        #expect(w.book.polled([w.record(0, 7)]) == [.seek(partition: 0, to: .offset(5)), .queryLowWatermark(partition: 0)])
        #expect(w.book.lowWatermark(partition: 0, 0) == [.seek(partition: 0, to: .offset(5))])
        #expect(w.book.polled([w.record(0, 8)]).isEmpty, "another offset: still sorting it out")
        #expect(w.book.pending.isEmpty)
        #expect(w.book.polled([w.record(0, 7)]) == [.noRecords(partition: 0, from: 5, to: 7)])
        #expect(w.book.pending.map(\.offset) == [7])
        #expect(w.book.polled([w.record(0, 8)]).isEmpty)
        #expect(w.book.pending.map(\.offset) == [7, 8])
    }

    @Test("Stored offsets that moved backwards (a restore) win: pending dropped, partitions sought to them")
    func restoreIsFollowed() {
        var w = BookkeepingWorld.started()
        w.poll()
        w.applyOK()
        #expect(w.stored[0] == 7)
        for _ in 0..<5 where !w.book.pending.contains(where: { $0.partition == 0 }) { w.poll() }
        #expect(w.book.pending.contains { $0.partition == 0 })
        w.restore()  // the region now stores 1 for partition 0
        w.applyOK()  // refused by the check
        #expect(w.book.pending.isEmpty)
        #expect(w.book.committed(0) == .at(1))
        #expect(w.position[0] == 1)
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
        #expect(w.stored[0] == 12)
    }

    @Test("Revoked partitions lose their pending records; a later re-assignment starts from the stored offset")
    func revokeDropsPending() {
        var w = BookkeepingWorld.started()
        w.poll()
        #expect(w.book.pending.contains { $0.partition == 0 })
        w.revoke([0])
        #expect(!w.book.pending.contains { $0.partition == 0 })
        #expect(w.book.committed(0) == nil)
        w.assign([0])
        #expect(w.book.committed(0) == .unresolved && w.book.paused.contains(0))
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
    }

    @Test("Batches applied in chunks (a split batch) keep every partition contiguous")
    func chunks() {
        var w = BookkeepingWorld.started()
        w.assign([1])
        w.resolve()
        for _ in 0..<3 { w.poll() }
        while !w.book.pending.isEmpty { w.applyOK(limit: 2) }
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
        #expect(w.stored == [0: 12, 1: 12, 2: 12])
    }

    @Test("A refused seek of a partition the region stores nothing for: never read from the group's committed offset")
    func refusedSeekToTheBeginning() {
        var w = BookkeepingWorld()
        w.stored = [:]  // the region's offsets are gone; the group's committed offset of partition 0 is 9
        w.failingSeeks = 1
        w.assign([0])
        w.resolve()
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
        #expect(w.stored[0] == BookkeepingWorld.end)
    }

    @Test("Refused seeks while a gap is sorted out: the partition still reaches its end")
    func refusedSeeksInAGap() {
        var w = BookkeepingWorld()
        w.failingSeeks = 3  // the seek to the stored offset, and both seeks of the gap that follows
        w.assign([0])
        w.resolve()
        w.drain()
        #expect(w.violations.isEmpty, "\(w.violations)")
        #expect(w.stored[0] == BookkeepingWorld.end)
    }

    @Test("Every interleaving with refused seeks and transaction markers (mid-log and at the end): no gap applied, every partition stored to its end",
          arguments: [[Step.assign1, .refuseSeeks, .poll, .applyFailed, .applyOK, .resolve],
                      [Step.refuseSeeks, .assign1, .poll, .revoke0, .applyOK, .resolve]])
    func interleavingsWithRefusedSeeksAndMarkers(_ steps: [Step]) {
        var failures: [String] = []
        let all = Self.permutations(steps)
        for order in all {
            var w = BookkeepingWorld()
            w.markers = [0: [6, 11], 1: [3, 11], 2: [11]]  // every partition's log ends with a marker
            w.assign([0, 2])
            w.resolve()
            Self.run(order, in: &w)
            w.drain()
            if !w.violations.isEmpty { failures.append("\(order.map(\.rawValue)): \(w.violations)") }
        }
        #expect(failures.isEmpty, "\(failures.count) of \(all.count) interleavings broke the invariant, e.g. \(failures.prefix(3))")
    }

    @Test("A region that stores nothing starts at the low watermark asked for, never at whatever the fetch delivers first")
    func beginningIsTheLowWatermark() {
        var w = BookkeepingWorld()
        _ = w.book.assigned([2])
        #expect(w.book.positionsResolved(stored: [:]) == [.queryLowWatermark(partition: 2)])
        #expect(w.book.paused == [2], "paused until the low watermark is known")
        #expect(w.book.polled([w.record(2, 7)]).isEmpty && w.book.pending.isEmpty)
        #expect(w.book.lowWatermark(partition: 2, 3) == [.seek(partition: 2, to: .offset(3)), .resume([2])])
        #expect(w.book.polled([w.record(2, 7)]) == [.seek(partition: 2, to: .offset(3)), .queryLowWatermark(partition: 2)])
        #expect(w.book.pending.isEmpty, "a record past the low watermark is a gap like any other")
    }

    @Test("A refused seek: nothing is taken from the partition until a retried seek is taken")
    func refusedSeekIsRetried() {
        var w = BookkeepingWorld()
        _ = w.book.assigned([0])
        #expect(w.book.positionsResolved(stored: [0: 4]) == [.seek(partition: 0, to: .offset(4)), .resume([0])])
        w.book.seekFailed(partition: 0)
        #expect(w.book.needsPositioning)
        #expect(w.book.polled([w.record(0, 4), w.record(0, 5)]).isEmpty && w.book.pending.isEmpty,
                "even the expected offset: the fetch position is unknown")
        #expect(w.book.retryPositioning() == [.seek(partition: 0, to: .offset(4))])
        #expect(!w.book.needsPositioning)
        _ = w.book.polled([w.record(0, 4)])
        #expect(w.book.pending.map(\.offset) == [4])
    }

    @Test("Markers after the last record: the end of the partition is proven by a second fetch, then stored without a record")
    func trailingMarkersAreStored() {
        var w = BookkeepingWorld()
        _ = w.book.assigned([0])
        _ = w.book.positionsResolved(stored: [0: 10])
        // Record 10, a commit marker at 11: the fetch ends at 12.
        let end = TopicPartitionOffset(topic: "t", partition: 0, offset: 12)
        #expect(w.book.polled([w.record(0, 10)], ends: [end]) == [.seek(partition: 0, to: .offset(11)), .queryLowWatermark(partition: 0)])
        #expect(w.book.progress(forFirst: 1) == [PartitionProgress(partition: 0, nextOffset: 11, lastRecordMs: nil)],
                "not past the marker before a second fetch proves it")
        _ = w.book.applySucceeded(count: 1, progress: w.book.progress(forFirst: 1))
        #expect(w.book.lowWatermark(partition: 0, 0) == [.seek(partition: 0, to: .offset(11))])
        #expect(!w.book.hasProgressWithoutRecords)
        #expect(w.book.polled([], ends: [end]) == [.noRecords(partition: 0, from: 11, to: 12)])
        #expect(w.book.hasProgressWithoutRecords)
        #expect(w.book.progress(forFirst: 0) == [PartitionProgress(partition: 0, nextOffset: 12, lastRecordMs: nil)])
        _ = w.book.applySucceeded(count: 0, progress: w.book.progress(forFirst: 0))
        #expect(!w.book.hasProgressWithoutRecords && w.book.committed(0) == .at(12))
    }

    @Test("Pending bytes follow the records accepted and applied")
    func pendingBytes() {
        var w = BookkeepingWorld.started()
        w.poll()
        #expect(w.book.pendingBytes == 10 * w.book.pending.count)
        w.applyOK(limit: 1)
        #expect(w.book.pendingBytes == 10 * w.book.pending.count)
        w.revoke([0, 2])
        #expect(w.book.pendingBytes == 0 && w.book.pending.isEmpty)
    }
}

@Suite("ApplyFailure: what a SQLSTATE means for a batch")
struct ApplyFailureTests {
    @Test("One row per SQLSTATE of the documented table", arguments: [
        ("25006", ApplyFailure.transient),  // read-only transaction (failover to a replica)
        ("53100", .transient),  // disk full
        ("53300", .transient),  // too many connections
        ("57014", .slow),  // statement timeout, or a cancel (pg_cancel_backend)
        ("54000", .split),  // program limit exceeded
        ("54001", .split),  // statement too complex
        ("53200", .slow),  // out of memory
        ("08000", .transient), ("08006", .transient), ("08001", .transient),  // connection exceptions (08xxx)
        ("08P01", .split),  // protocol violation (a message too large)
        ("40001", .transient),  // serialization failure
        ("40P01", .transient),  // deadlock
        ("57P01", .transient),  // admin shutdown
        ("57P03", .transient),  // cannot connect now (starting up)
        ("55P03", .transient),  // lock not available (lock_timeout: a lock wait)
        ("58030", .transient),  // I/O error
        ("XX000", .transient),  // internal error
        ("22P02", .deadLetter), ("22001", .deadLetter),  // data exceptions
        ("23505", .deadLetter), ("23514", .deadLetter),  // integrity constraint violations
        ("42P01", .schema),  // undefined table
        ("42703", .schema),  // undefined column
        ("42883", .schema),  // undefined function
        ("3F000", .schema),  // invalid schema name
        ("42501", .schema),  // insufficient privilege
        ("RRM01", .offsetsMoved),  // the batch's stored offsets moved
        ("RR001", .transient),  // client-side timeout
    ])
    func row(_ sqlstate: String, _ expected: ApplyFailure) {
        #expect(ApplyFailure.classify(sqlstate) == expected, "\(sqlstate)")
    }
}
