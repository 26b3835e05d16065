import Foundation
import Testing
@testable import ReplicationCore

@Suite("verify: key ranges, bisection and the classification of divergences")
struct DivergenceTests {
    let regions = ["a", "b", "c"]

    func row(_ v: Int64, hash: String = "aa", fp: Int64? = nil, session: String = "s", created: Int64 = 100, applied: Int64 = 200) -> RowState {
        RowState(version: v, contentHash: hash, fingerprint: fp ?? v * 1000 + Int64(hash.hashValue & 0xff), sessionID: session,
                 createdAt: created, replicatedAt: applied)
    }

    func kinds(_ d: [Divergence]) -> [String] { d.map { "\($0.region):\($0.kind.rawValue)" }.sorted() }

    // MARK: - Key ranges

    @Test("Slices tile the key space exactly; segments tile a range; uuid bounds are the range ends")
    func ranges() {
        let slices = (0..<7).map { KeyRange.slice($0, of: 7) }
        #expect(slices.first?.lo == 0 && slices.last?.hi == KeyRange.end)
        for (a, b) in zip(slices, slices.dropFirst()) { #expect(a.hi == b.lo) }
        let r = KeyRange(lo: 100, hi: 1100)
        let w = r.segmentWidth(fanout: 16)
        let segs = (0..<Int64(16)).map { r.segment($0, width: w) }.filter { $0.lo < r.hi }
        #expect(segs.first?.lo == 100 && segs.last?.hi == 1100)
        #expect(segs.reduce(0) { $0 + $1.width } == 1000)
        #expect(KeyRange.all.uuidBounds.lo == "00000000-0000-0000-0000-000000000000" && KeyRange.all.uuidBounds.hi == nil)
        #expect(KeyRange.slice(1, of: 16).uuidBounds == ("10000000-0000-0000-0000-000000000000", "20000000-0000-0000-0000-000000000000"))
        #expect(KeyRange(lo: 5, hi: 6).segmentWidth(fanout: 16) == 1)
    }

    // MARK: - Bisection

    @Test("Only differing segments are looked into: small ones fetched, large ones split, equal ones skipped")
    func bisectionPlan() {
        let same = SegmentDigest(count: 10, xor: 42)
        let digests: [[Int64: SegmentDigest]] = [
            [0: same, 1: same, 2: SegmentDigest(count: 5000, xor: 1), 3: same],
            [0: same, 1: SegmentDigest(count: 10, xor: 43), 2: SegmentDigest(count: 5000, xor: 2), 3: same],
            [0: same, 1: same, 2: SegmentDigest(count: 5000, xor: 1), 3: same, 4: SegmentDigest(count: 1, xor: 9)],
        ]
        let p = Bisection.plan(digests, fetchAtMost: 2000, splittable: { _ in true })
        #expect(p.fetch == [1, 4])  // 4: present in one region only
        #expect(p.split == [2])
        let narrow = Bisection.plan(digests, fetchAtMost: 2000, splittable: { _ in false })
        #expect(narrow.fetch == [1, 2, 4] && narrow.split.isEmpty)
        #expect(Bisection.plan([[0: same], [0: same]], fetchAtMost: 1, splittable: { _ in true }) == ([], []))
    }

    // MARK: - Classification

    @Test("Every region agreeing is no divergence")
    func agreeing() {
        let s = MessageState(row: row(3))
        let (_, d) = Classifier.classify(messageID: "m", ["a": s, "b": s, "c": s], regions: regions, sessionTombstone: { _ in nil })
        #expect(d.isEmpty)
    }

    @Test("A missing row, a stale version, and a same-version conflict decided by the content hash")
    func missingAndStale() {
        var (t, d) = Classifier.classify(messageID: "m", ["a": MessageState(row: row(3)), "b": MessageState(row: row(2))],
                                         regions: regions, sessionTombstone: { _ in nil })
        #expect(kinds(d) == ["b:stale", "c:missing"])
        #expect(t.row?.version == 3 && t.rowHolder == "a")
        (t, d) = Classifier.classify(messageID: "m", ["a": MessageState(row: row(3, hash: "11")), "b": MessageState(row: row(3, hash: "ff")),
                                                      "c": MessageState(row: row(3, hash: "11"))],
                                     regions: regions, sessionTombstone: { _ in nil })
        #expect(t.rowHolder == "b")
        #expect(kinds(d) == ["a:stale", "c:stale"])
    }

    @Test("A row only one region has: only_here there, missing in the others")
    func onlyHere() {
        let (t, d) = Classifier.classify(messageID: "m", ["b": MessageState(row: row(1))], regions: regions, sessionTombstone: { _ in nil })
        #expect(kinds(d) == ["a:missing", "b:only_here", "c:missing"])
        #expect(!t.isDeleted)
    }

    @Test("A message tombstone wins over the versions it covers: the row is resurrected where present")
    func resurrected() {
        let tomb = TombstoneState(version: 4, sessionID: "s", deletedAt: 500)
        let (t, d) = Classifier.classify(messageID: "m", ["a": MessageState(tombstone: tomb), "b": MessageState(tombstone: tomb),
                                                          "c": MessageState(row: row(3))],
                                         regions: regions, sessionTombstone: { _ in nil })
        #expect(t.isDeleted && t.tombstone == tomb)
        #expect(kinds(d) == ["c:resurrected", "c:tombstone_missing"])
        // A newer version than the tombstone is live: the tombstone stays, the row must be everywhere.
        let (t2, d2) = Classifier.classify(messageID: "m", ["a": MessageState(row: row(5), tombstone: tomb), "b": MessageState(tombstone: tomb),
                                                            "c": MessageState(row: row(5), tombstone: tomb)],
                                           regions: regions, sessionTombstone: { _ in nil })
        #expect(t2.row?.version == 5)
        #expect(kinds(d2) == ["b:missing"])
    }

    @Test("A session tombstone covers rows created at or before it, not after")
    func sessionCover() {
        let s = MessageState(row: row(1, created: 100))
        let (t, d) = Classifier.classify(messageID: "m", ["a": s], regions: regions, sessionTombstone: { $0 == "s" ? 100 : nil })
        #expect(t.isDeleted && t.sessionCover == 100)
        #expect(kinds(d) == ["a:resurrected"])
        let (t2, d2) = Classifier.classify(messageID: "m", ["a": s, "b": s, "c": s], regions: regions, sessionTombstone: { _ in 99 })
        #expect(!t2.isDeleted && d2.isEmpty)
    }

    @Test("Session tombstones: the latest wins; regions without it or with an older one diverge")
    func sessions() {
        let d = Classifier.classifySession("s", ["a": 10, "b": 20], regions: regions)
        #expect(d.map(\.region) == ["a", "c"] && d.allSatisfy { $0.kind == .sessionTombstoneMissing && $0.want == 20 })
        #expect(Classifier.classifySession("s", ["a": 1, "b": 1, "c": 1], regions: regions).isEmpty)
    }

    @Test("Only divergences seen by both passes are reported (events in flight converge in between)")
    func persisting() {
        let first = [Divergence(region: "a", kind: .missing, messageID: "m1", sessionID: "s", have: nil, want: 2),
                     Divergence(region: "b", kind: .stale, messageID: "m2", sessionID: "s", have: 1, want: 2)]
        let second = [Divergence(region: "b", kind: .stale, messageID: "m2", sessionID: "s", have: 1, want: 3),
                      Divergence(region: "c", kind: .missing, messageID: "m3", sessionID: "s", have: nil, want: 1)]
        #expect(Classifier.persisting(first: first, second: second) == [second[0]])
    }

    /// One pass over message "m" with these per-region states.
    func pass(_ states: [String: MessageState]) -> VerifyPass {
        var p = VerifyPass()
        let (truth, found) = Classifier.classify(messageID: "m", states, regions: regions, sessionTombstone: { _ in nil })
        p.divergences = found
        if !found.isEmpty {
            p.truths["m"] = truth
            p.states["m"] = states
        }
        return p
    }

    @Test("A message edited between the passes, that the regions follow, is in flight; the same winner twice, or a region still below the first winner, is divergent")
    func persistingAcrossAMovingWinner() {
        let s = { (v: Int64) in MessageState(row: self.row(v)) }
        // Streamed: b is one version behind the origin in both passes, but reached the first winner.
        let first = pass(["a": s(43), "b": s(42), "c": s(43)])
        #expect(kinds(first.divergences) == ["b:stale"])
        #expect(Classifier.persisting(first: first, second: pass(["a": s(61), "b": s(60), "c": s(61)])).isEmpty)
        // Stuck: the winner moved on, b is still below the first pass's winner.
        let stuck = Classifier.persisting(first: first, second: pass(["a": s(61), "b": s(42), "c": s(61)]))
        #expect(kinds(stuck) == ["b:stale"] && stuck.first?.have == 42 && stuck.first?.want == 61)
        // The winner did not move: b differs in both passes, whatever its version.
        #expect(kinds(Classifier.persisting(first: first, second: pass(["a": s(43), "b": s(42), "c": s(43)]))) == ["b:stale"])
        // Same version, other content losing the tie-break: below the winner, though not older.
        let tie = pass(["a": MessageState(row: row(5, hash: "ff")), "b": MessageState(row: row(5, hash: "11")), "c": MessageState(row: row(5, hash: "ff"))])
        let tieLater = pass(["a": s(9), "b": MessageState(row: row(5, hash: "11")), "c": s(8)])
        #expect(kinds(Classifier.persisting(first: tie, second: tieLater)) == ["b:stale"])
    }

    @Test("A row only one region holds stays only_here while the others' missing persists, even as its origin edits it")
    func onlyHereWhileEdited() {
        let first = pass(["b": MessageState(row: row(3))])
        let second = pass(["b": MessageState(row: row(9))])
        #expect(kinds(Classifier.persisting(first: first, second: second)) == ["a:missing", "b:only_here", "c:missing"])
        // The others caught up with it meanwhile: nothing.
        #expect(Classifier.persisting(first: first, second: pass(["a": MessageState(row: row(9)), "b": MessageState(row: row(9)),
                                                                  "c": MessageState(row: row(9))])).isEmpty)
    }

    // MARK: - Summary and repair plan

    @Test("Per-region summary: counts, sample sessions, a replay window around the winners' times")
    func summary() {
        let truth = MessageTruth(row: row(2, session: "s1", created: 1_000_000_000, applied: 1_000_500_000), rowHolder: "a",
                                 tombstone: nil, sessionCover: nil, sessionID: "s1")
        let d = [Divergence(region: "b", kind: .missing, messageID: "m", sessionID: "s1", have: nil, want: 2),
                 Divergence(region: "c", kind: .onlyHere, messageID: "x", sessionID: "s2", have: 1, want: 1)]
        let s = RegionDivergenceSummary.make(d, truths: ["m": truth], regions: regions)
        #expect(s.map(\.total) == [0, 1, 1])
        #expect(s[1].counts[.missing] == 1 && s[1].sampleSessions == ["s1"])
        #expect(s[1].replayFrom == 1_000_000_000 - RegionDivergenceSummary.replayMargin)
        #expect(s[1].replayTo == 1_000_500_000 + RegionDivergenceSummary.replayMargin)
        #expect(s[2].replayFrom == nil, "a row no other region holds cannot come back by replay")
    }

    @Test("Repair plans: winners to regions missing them, tombstones where resurrected, nothing to the holder")
    func repairPlans() {
        var pass = VerifyPass()
        let tomb = TombstoneState(version: 4, sessionID: "s", deletedAt: 500)
        pass.truths = ["m1": MessageTruth(row: row(2), rowHolder: "a", tombstone: nil, sessionCover: nil, sessionID: "s"),
                       "m2": MessageTruth(row: nil, rowHolder: nil, tombstone: tomb, sessionCover: nil, sessionID: "s"),
                       "m3": MessageTruth(row: nil, rowHolder: nil, tombstone: nil, sessionCover: 900, sessionID: "t")]
        pass.divergences = [
            Divergence(region: "b", kind: .missing, messageID: "m1", sessionID: "s", have: nil, want: 2),
            Divergence(region: "c", kind: .stale, messageID: "m1", sessionID: "s", have: 1, want: 2),
            Divergence(region: "c", kind: .resurrected, messageID: "m2", sessionID: "s", have: 3, want: 4),
            Divergence(region: "c", kind: .tombstoneMissing, messageID: "m2", sessionID: "s", have: nil, want: 4),
            Divergence(region: "a", kind: .resurrected, messageID: "m3", sessionID: "t", have: 1, want: nil),
            Divergence(region: "b", kind: .sessionTombstoneMissing, messageID: nil, sessionID: "t", have: nil, want: 900),
        ]
        let plans = Verifier.repairPlans(pass, regions: regions)
        #expect(plans[0].rows.isEmpty && plans[0].messageTombstones.isEmpty && plans[0].sessionTombstones.map(\.sessionID) == ["t"])
        #expect(plans[1].rows == ["m1"] && plans[1].sessionTombstones.map(\.deletedAt) == [900])
        #expect(plans[2].rows == ["m1"] && plans[2].messageTombstones.map(\.messageID) == ["m2"] && plans[2].sessionTombstones.isEmpty)
    }
}
