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
public struct ApplyPlan: Sendable {
    public var upserts: [MessageUpsert] = []
    /// Further versions of messages already in ``upserts`` with the same `version` and different
    /// content or attributes: round `r` holds at most one per message, with its Kafka timestamp.
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
        var upsertIndex: [UUID: Int] = [:]
        var ties: [Int: [(upsert: MessageUpsert, timestampMs: Int64?)]] = [:]
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
                } else if let i = upsertIndex[u.messageID] {
                    let kept = upserts[i]
                    if u.version > kept.version {
                        upserts[i] = u
                        upsertTimestamps[i] = r.record.timestampMs
                        decided[.stale] += 1 + (ties[i]?.count ?? 0)
                        ties[i] = nil
                    } else if u.version < kept.version {
                        decided[.stale] += 1
                    } else if kept.sameVersionContent(u) || ties[i, default: []].contains(where: { $0.upsert.sameVersionContent(u) }) {
                        decided[.duplicate] += 1
                    } else {
                        ties[i, default: []].append((u, r.record.timestampMs))
                    }
                } else {
                    upsertIndex[u.messageID] = upserts.count
                    upserts.append(u)
                    upsertTimestamps.append(r.record.timestampMs)
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
        for i in ties.keys.sorted() {
            for (round, tie) in ties[i]!.enumerated() {
                if tieRounds.count <= round { tieRounds.append([]) }
                tieRounds[round].append(tie)
            }
        }
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
}
