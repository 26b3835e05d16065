import Foundation

// The pure part of `verify`: key ranges and their bisection, and what a set of per-region states
// of one message or session means (which state wins, what each region lacks). No I/O here.

// MARK: - Key ranges

/// A half-open range `[lo, hi)` of the 32-bit key space that segments are cut from: the first
/// four bytes of a message id (or a 32-bit hash of a session id).
public struct KeyRange: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let end: Int64 = 1 << 32
    public static let all = KeyRange(lo: 0, hi: end)

    public var lo: Int64
    public var hi: Int64

    public init(lo: Int64, hi: Int64) {
        precondition(0 <= lo && lo < hi && hi <= Self.end, "bad key range [\(lo), \(hi))")
        self.lo = lo
        self.hi = hi
    }

    public var width: Int64 { hi - lo }

    /// Slice `index` of `count` equal slices of the whole key space (the daemon's unit of work).
    public static func slice(_ index: Int, of count: Int) -> KeyRange {
        precondition(count >= 1 && index >= 0 && index < count)
        let lo = Self.end * Int64(index) / Int64(count)
        let hi = Self.end * Int64(index + 1) / Int64(count)
        return KeyRange(lo: lo, hi: hi)
    }

    /// The width of each of (at most) `fanout` segments covering this range.
    public func segmentWidth(fanout: Int) -> Int64 { max(1, (width + Int64(fanout) - 1) / Int64(fanout)) }

    /// Segment `index` of width `segmentWidth` (the last one is cut at `hi`).
    public func segment(_ index: Int64, width segmentWidth: Int64) -> KeyRange {
        let lo = self.lo + index * segmentWidth
        return KeyRange(lo: lo, hi: min(hi, lo + segmentWidth))
    }

    /// The uuid bounds of this range: `lo` inclusive, `hi` exclusive (nil: no upper bound).
    public var uuidBounds: (lo: String, hi: String?) {
        func uuid(_ k: Int64) -> String { String(format: "%08x-0000-0000-0000-000000000000", UInt32(k)) }
        return (uuid(lo), hi == Self.end ? nil : uuid(hi))
    }

    public static func < (a: KeyRange, b: KeyRange) -> Bool { (a.lo, a.hi) < (b.lo, b.hi) }
    public var description: String { String(format: "[%08llx, %09llx)", lo, hi) }
}

/// What one region's database says about one segment: how many items, and the XOR of their hashes.
public struct SegmentDigest: Hashable, Sendable {
    public var count: Int64
    public var xor: Int64

    public init(count: Int64, xor: Int64) {
        self.count = count
        self.xor = xor
    }

    public static let empty = SegmentDigest(count: 0, xor: 0)
}

/// Which segments to look into, from every region's digests of one level.
public enum Bisection {
    /// The segments whose digests differ between regions (absent = empty), split into those
    /// small enough to fetch row by row (at most `fetchAtMost` items in every region, or too
    /// narrow to split) and those to bisect further.
    public static func plan(_ digests: [[Int64: SegmentDigest]], fetchAtMost: Int64,
                            splittable: (Int64) -> Bool) -> (fetch: [Int64], split: [Int64]) {
        var fetch: [Int64] = []
        var split: [Int64] = []
        let segments = Set(digests.flatMap(\.keys)).sorted()
        for s in segments {
            let all = digests.map { $0[s] ?? .empty }
            guard Set(all).count > 1 else { continue }
            let largest = all.map(\.count).max() ?? 0
            if largest <= fetchAtMost || !splittable(s) { fetch.append(s) } else { split.append(s) }
        }
        return (fetch, split)
    }
}

// MARK: - States and divergences

/// One row of the messages table as the comparison sees it.
public struct RowState: Hashable, Sendable {
    public var version: Int64
    /// Hex of the content hash (the equal-version tie-break: the greater wins).
    public var contentHash: String
    /// Hash of every replicated column: two regions agree on the row iff these are equal.
    public var fingerprint: Int64
    public var sessionID: String
    /// µs since the epoch.
    public var createdAt: Int64
    /// When this region applied it (µs), for the replay window.
    public var replicatedAt: Int64

    public init(version: Int64, contentHash: String, fingerprint: Int64, sessionID: String, createdAt: Int64, replicatedAt: Int64) {
        self.version = version
        self.contentHash = contentHash
        self.fingerprint = fingerprint
        self.sessionID = sessionID
        self.createdAt = createdAt
        self.replicatedAt = replicatedAt
    }

    /// The order of the apply path's rules: version, then content hash, then fingerprint.
    func beats(_ other: RowState) -> Bool {
        (version, contentHash, fingerprint) > (other.version, other.contentHash, other.fingerprint)
    }
}

/// A message tombstone.
public struct TombstoneState: Hashable, Sendable {
    public var version: Int64
    public var sessionID: String
    /// µs since the epoch.
    public var deletedAt: Int64

    public init(version: Int64, sessionID: String, deletedAt: Int64) {
        self.version = version
        self.sessionID = sessionID
        self.deletedAt = deletedAt
    }
}

/// What one region holds for one message id.
public struct MessageState: Hashable, Sendable {
    public var row: RowState?
    public var tombstone: TombstoneState?

    public init(row: RowState? = nil, tombstone: TombstoneState? = nil) {
        self.row = row
        self.tombstone = tombstone
    }
}

/// What every region should hold for one message id, by the apply path's rules.
public struct MessageTruth: Hashable, Sendable {
    /// The winning row and a region that holds it, when the message is live.
    public var row: RowState?
    public var rowHolder: String?
    /// The highest message tombstone any region holds.
    public var tombstone: TombstoneState?
    /// The session tombstone (µs) that covers the winning row, when one does.
    public var sessionCover: Int64?
    /// The session id the repair works on (the winning row's, else the tombstone's).
    public var sessionID: String

    public var isDeleted: Bool { row == nil }
}

/// The kinds of divergence `verify` reports.
public enum DivergenceKind: String, Sendable, Codable, CaseIterable, Comparable {
    /// The winning row is live, and this region has no row.
    case missing
    /// This region's row is at an older version (or differs at the same version and loses the tie-break).
    case stale
    /// This region has a row that a message or session tombstone (in any region) covers.
    case resurrected
    /// Only this region has the row (and no region tombstoned it): the others count it as missing.
    case onlyHere = "only_here"
    /// This region lacks the highest message tombstone.
    case tombstoneMissing = "tombstone_missing"
    /// This region lacks a session tombstone (or holds an older one).
    case sessionTombstoneMissing = "session_tombstone_missing"

    public static func < (a: Self, b: Self) -> Bool {
        allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
    }
}

/// One divergence of one region.
public struct Divergence: Hashable, Sendable, Comparable {
    public var region: String
    public var kind: DivergenceKind
    /// nil for a session tombstone.
    public var messageID: String?
    public var sessionID: String
    /// The region's version (message) or deletion time (session, µs); nil when it has none.
    public var have: Int64?
    /// The winning version or deletion time.
    public var want: Int64?

    public init(region: String, kind: DivergenceKind, messageID: String?, sessionID: String, have: Int64?, want: Int64?) {
        self.region = region
        self.kind = kind
        self.messageID = messageID
        self.sessionID = sessionID
        self.have = have
        self.want = want
    }

    /// Identity across the two passes (the versions may move in between).
    var key: String { "\(region)|\(kind.rawValue)|\(messageID ?? "")|\(sessionID)" }

    public static func < (a: Self, b: Self) -> Bool {
        (a.region, a.kind, a.messageID ?? "", a.sessionID) < (b.region, b.kind, b.messageID ?? "", b.sessionID)
    }
}

public enum Classifier {
    /// The winner for one message id across `states` (a region absent from it holds nothing),
    /// given the highest session tombstone of each session (`sessionTombstone`).
    public static func truth(_ states: [String: MessageState], sessionTombstone: (String) -> Int64?) -> MessageTruth {
        var best: (RowState, String)? = nil
        var tomb: TombstoneState? = nil
        for (region, s) in states.sorted(by: { $0.key < $1.key }) {
            if let r = s.row, best.map({ r.beats($0.0) }) ?? true { best = (r, region) }
            if let t = s.tombstone, tomb.map({ t.version > $0.version }) ?? true { tomb = t }
        }
        let session = best?.0.sessionID ?? tomb?.sessionID ?? ""
        var truth = MessageTruth(row: nil, rowHolder: nil, tombstone: tomb, sessionCover: nil, sessionID: session)
        guard let (row, holder) = best else { return truth }
        if let t = tomb, t.version >= row.version { return truth }
        if let s = sessionTombstone(row.sessionID), s >= row.createdAt {
            truth.sessionCover = s
            return truth
        }
        truth.row = row
        truth.rowHolder = holder
        return truth
    }

    /// Every divergence of one message id among `regions`.
    public static func classify(messageID: String, _ states: [String: MessageState], regions: [String],
                                sessionTombstone: (String) -> Int64?) -> (MessageTruth, [Divergence]) {
        let truth = truth(states, sessionTombstone: sessionTombstone)
        var out: [Divergence] = []
        let holders = regions.filter { states[$0]?.row != nil }
        for region in regions {
            let s = states[region] ?? MessageState()
            func add(_ kind: DivergenceKind, have: Int64?, want: Int64?) {
                out.append(Divergence(region: region, kind: kind, messageID: messageID,
                                      sessionID: s.row?.sessionID ?? truth.sessionID, have: have, want: want))
            }
            if let want = truth.row {
                if let have = s.row {
                    if have.fingerprint != want.fingerprint {
                        add(.stale, have: have.version, want: want.version)
                    } else if holders.count == 1 && regions.count > 1 && truth.tombstone == nil {
                        add(.onlyHere, have: have.version, want: want.version)
                    }
                } else {
                    add(.missing, have: nil, want: want.version)
                }
            } else if let have = s.row {
                add(.resurrected, have: have.version, want: truth.tombstone?.version)
            }
            if let t = truth.tombstone, (s.tombstone?.version ?? Int64.min) < t.version {
                add(.tombstoneMissing, have: s.tombstone?.version, want: t.version)
            }
        }
        return (truth, out)
    }

    /// Every divergence of one session's tombstone among `regions` (`deletedAt`: µs per region
    /// that holds one). The latest deletion wins.
    public static func classifySession(_ sessionID: String, _ deletedAt: [String: Int64], regions: [String]) -> [Divergence] {
        guard let want = deletedAt.values.max() else { return [] }
        return regions.compactMap { r in
            let have = deletedAt[r]
            guard (have ?? Int64.min) < want else { return nil }
            return Divergence(region: r, kind: .sessionTombstoneMissing, messageID: nil, sessionID: sessionID, have: have, want: want)
        }
    }

    /// The divergences present in both passes (by region, kind and id), with the second pass's figures.
    public static func persisting(first: [Divergence], second: [Divergence]) -> [Divergence] {
        let keys = Set(first.map(\.key))
        return second.filter { keys.contains($0.key) }.sorted()
    }
}

// MARK: - Per-region summary

/// What `verify` reports for one region.
public struct RegionDivergenceSummary: Sendable, Hashable {
    public var region: String
    public var counts: [DivergenceKind: Int] = [:]
    /// Up to ``sampleSize`` session ids, sorted.
    public var sampleSessions: [String] = []
    /// Kafka record times an operator could replay into this region to restore what it lacks:
    /// from the earliest creation or deletion time concerned (minus a margin for clock skew) to
    /// the latest time another region applied it (plus a margin). nil when a replay cannot help
    /// (nothing is missing here, or the only holders never published).
    public var replayFrom: Int64?
    public var replayTo: Int64?

    public static let sampleSize = 10
    /// Margin for the application's clock against Kafka's (µs).
    public static let replayMargin: Int64 = 5 * 60 * 1_000_000

    public var total: Int { counts.values.reduce(0, +) }

    /// Summaries of `divergences` for `regions` (every region listed, divergent or not).
    public static func make(_ divergences: [Divergence], truths: [String: MessageTruth], regions: [String]) -> [RegionDivergenceSummary] {
        regions.map { region in
            var s = RegionDivergenceSummary(region: region)
            let mine = divergences.filter { $0.region == region }
            for d in mine { s.counts[d.kind, default: 0] += 1 }
            s.sampleSessions = Array(Set(mine.map(\.sessionID)).sorted().prefix(sampleSize))
            var from: Int64? = nil
            var to: Int64? = nil
            func widen(_ a: Int64, _ b: Int64) {
                from = min(from ?? a, a)
                to = max(to ?? b, b)
            }
            for d in mine {
                switch d.kind {
                case .missing, .stale:
                    // Only a replay of the other regions' events helps; a row no other region
                    // holds was applied nowhere from Kafka (or its origin never published).
                    if let id = d.messageID, let t = truths[id], let row = t.row {
                        widen(row.createdAt, max(row.replicatedAt, row.createdAt))
                    }
                case .resurrected, .tombstoneMissing:
                    if let id = d.messageID, let t = truths[id] {
                        if let tomb = t.tombstone { widen(tomb.deletedAt, tomb.deletedAt) }
                        if let cover = t.sessionCover { widen(cover, cover) }
                    }
                case .sessionTombstoneMissing:
                    if let w = d.want { widen(w, w) }
                case .onlyHere:
                    break
                }
            }
            if let f = from, let t = to {
                // Instants read from the regions' databases: saturating, whatever they say.
                s.replayFrom = f.saturatingSubtracting(replayMargin)
                s.replayTo = t.saturatingAdding(replayMargin)
            }
            return s
        }
    }
}
