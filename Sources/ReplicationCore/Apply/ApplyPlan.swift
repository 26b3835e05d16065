import Foundation

/// A batch reduced to set operations (the apply rules of docs/events.md), before any SQL.
///
/// Several events of one message (or session) collapse to the one that matters, so that the
/// multi-row statements never touch a row twice; the collapsed ones are counted as duplicate
/// (same version and same content and attributes) or stale (lower version) here, since the
/// database never sees them.
///
/// Versions of one message with the same `version` but different content are not decided here:
/// the database decides them by ``ContentHash`` (the greater hash wins). The first goes into
/// ``upserts``, each further one into a later round of ``tieRounds``, applied by a statement of
/// its own in the same transaction.
///
/// Versions of one message with another `session_id` or `created_at` (its *identity*) are not
/// collapsed either: each identity, in the order the batch first shows it, is collapsed on its
/// own and goes to a later round. The database then meets them in arrival order and refuses a
/// version that would replace a stored one of another identity (docs/events.md), exactly as if
/// they had come in batches of their own.
public struct ApplyPlan: Sendable {
    public var upserts: [MessageUpsert] = []
    /// Further versions of messages already in ``upserts`` — with the same `version` and different
    /// content or attributes, or with another identity — in the order the database must meet
    /// them: round `r` holds at most one per message, with its Kafka timestamp.
    public var tieRounds: [[(upsert: MessageUpsert, timestampMs: Int64?)]] = []
    public var messageTombstones: [MessageDeletion] = []
    public var sessionTombstones: [SessionDeletion] = []
    public var deadLetters: [DeadLetter] = []
    /// Kafka timestamps (ms) of the records that supplied each kept item, parallel to the arrays
    /// above: for the apply-latency histogram of the events the database then applies.
    public var upsertTimestamps: [Int64?] = []
    public var messageTombstoneTimestamps: [Int64?] = []
    public var sessionTombstoneTimestamps: [Int64?] = []
    /// Outcomes already decided without the database.
    public var decided = OutcomeCounts()

    /// Builds the plan for `region`.
    public init(records: some Sequence<DecodedRecord>, region: String, applyToOrigin: Bool) {
        // One slot per message identity: the kept version, its timestamp, its equal-version ties.
        var slots: [Slot] = []
        var slotsOf: [UUID: [Int]] = [:]  // a message's slots, in the order they appeared
        var tombIndex: [UUID: Int] = [:]
        var sessionIndex: [String: Int] = [:]
        for r in records {
            switch r.event {
            case .failure(let e):
                deadLetters.append(DeadLetter(record: r.record, error: e.description))
                decided[.deadLettered] += 1
            case .success(.messageUpserted(let u)):
                if u.originRegion == region && !applyToOrigin {
                    decided[.skippedOrigin] += 1
                } else if let i = slotsOf[u.messageID]?.first(where: { slots[$0].kept.sameIdentity(u) }) {
                    let kept = slots[i].kept
                    if u.version > kept.version {
                        decided[.stale] += 1 + slots[i].ties.count
                        slots[i] = Slot(kept: u, timestampMs: r.record.timestampMs)
                    } else if u.version < kept.version {
                        decided[.stale] += 1
                    } else if kept.sameVersionContent(u) || slots[i].ties.contains(where: { $0.upsert.sameVersionContent(u) }) {
                        decided[.duplicate] += 1
                    } else {
                        slots[i].ties.append((u, r.record.timestampMs))
                    }
                } else {
                    slotsOf[u.messageID, default: []].append(slots.count)
                    slots.append(Slot(kept: u, timestampMs: r.record.timestampMs))
                }
            case .success(.messageDeleted(let d)):
                if let i = tombIndex[d.messageID] {
                    let kept = messageTombstones[i]
                    if d.version > kept.version {
                        messageTombstones[i] = d
                        messageTombstoneTimestamps[i] = r.record.timestampMs
                        decided[.stale] += 1
                    } else {
                        decided[d.version == kept.version ? .duplicate : .stale] += 1
                    }
                } else {
                    tombIndex[d.messageID] = messageTombstones.count
                    messageTombstones.append(d)
                    messageTombstoneTimestamps.append(r.record.timestampMs)
                }
            case .success(.sessionDeleted(let s)):
                if let i = sessionIndex[s.sessionID] {
                    let kept = sessionTombstones[i]
                    if s.occurredAt > kept.occurredAt {
                        sessionTombstones[i] = s
                        sessionTombstoneTimestamps[i] = r.record.timestampMs
                        decided[.stale] += 1
                    } else {
                        decided[s.occurredAt == kept.occurredAt ? .duplicate : .stale] += 1
                    }
                } else {
                    sessionIndex[s.sessionID] = sessionTombstones.count
                    sessionTombstones.append(s)
                    sessionTombstoneTimestamps.append(r.record.timestampMs)
                }
            }
        }
        // Each message's versions in the order the database must meet them: per identity (in
        // the order of appearance) the kept version, then its ties. Round 0 is `upserts`.
        for (i, slot) in slots.enumerated() {
            guard let all = slotsOf[slot.kept.messageID], all.first == i else { continue }
            let sequence = all.flatMap { j in [(upsert: slots[j].kept, timestampMs: slots[j].timestampMs)] + slots[j].ties }
            upserts.append(sequence[0].upsert)
            upsertTimestamps.append(sequence[0].timestampMs)
            for (round, item) in sequence.dropFirst().enumerated() {
                if tieRounds.count <= round { tieRounds.append([]) }
                tieRounds[round].append(item)
            }
        }
    }

    /// One identity of one message: the version kept so far and its equal-version ties.
    private struct Slot {
        var kept: MessageUpsert
        var timestampMs: Int64?
        var ties: [(upsert: MessageUpsert, timestampMs: Int64?)] = []
    }

    /// The number of events the database must classify.
    public var pendingCount: Int {
        upserts.count + tieRounds.reduce(0) { $0 + $1.count } + messageTombstones.count + sessionTombstones.count
    }
}

extension MessageUpsert {
    /// Same content and attributes (as received): a re-delivery of the same version.
    func sameVersionContent(_ other: MessageUpsert) -> Bool {
        content == other.content && attributes == other.attributes
    }

    /// Same session and creation time: versions of one message as the apply rules require.
    func sameIdentity(_ other: MessageUpsert) -> Bool {
        sessionID == other.sessionID && createdAt == other.createdAt
    }
}
