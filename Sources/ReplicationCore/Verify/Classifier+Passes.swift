import Foundation

// What persists from the first pass to the second: the rule that keeps a message edited all the
// time (a streamed reply) from being reported, and still reports a region stuck on it.

extension MessageTruth {
    /// Whether `other` names the same winner: the same winning row (version, content hash,
    /// fingerprint), the same highest tombstone and the same covering session tombstone.
    func sameWinner(as other: MessageTruth) -> Bool {
        row?.version == other.row?.version && row?.contentHash == other.row?.contentHash
            && row?.fingerprint == other.row?.fingerprint && tombstone?.version == other.tombstone?.version
            && sessionCover == other.sessionCover
    }

    /// Whether `state` is at least as new as this winner, by the apply path's order: a row the
    /// winning row does not beat, or a tombstone covering its version; for a deleted message, a
    /// tombstone at least as high. A message deleted by a session tombstone is never reached
    /// this way (that tombstone does not move).
    func isReached(by state: MessageState) -> Bool {
        if let winner = row {
            if let r = state.row, !winner.beats(r) { return true }
            return (state.tombstone?.version ?? Int64.min) >= winner.version
        }
        if let t = tombstone { return (state.tombstone?.version ?? Int64.min) >= t.version }
        return false
    }
}

extension Classifier {
    /// The divergences of `second` that are real.
    ///
    /// A divergence must be seen by both passes (by region, kind and id: ``persisting(first:second:)``).
    /// For a message, it is real when its winner did not move between the passes, or when the
    /// region's state in the second pass is still below the first pass's winner (stuck). A region
    /// that reached the first pass's winner while the winner moved on is following a message
    /// that is being edited: in flight, not divergent. A region holding the only copy
    /// (`only_here`) diverges as long as another region's `missing` of it does.
    public static func persisting(first: VerifyPass, second: VerifyPass) -> [Divergence] {
        let seenTwice = persisting(first: first.divergences, second: second.divergences)
        var kept = seenTwice.filter { d in
            guard let id = d.messageID, d.kind != .onlyHere, let before = first.truths[id], let now = second.truths[id] else { return true }
            if before.sameWinner(as: now) { return true }
            return !before.isReached(by: second.states[id]?[d.region] ?? MessageState())
        }
        let missing = Set(kept.filter { $0.kind == .missing }.compactMap(\.messageID))
        kept = kept.filter { $0.kind != .onlyHere || missing.contains($0.messageID ?? "") }
        return kept
    }
}
