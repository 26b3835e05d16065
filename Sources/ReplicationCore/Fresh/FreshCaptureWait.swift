import Foundation

/// One read of a capturing region's WAL position and capture slot, from its own database.
struct FreshCaptureRead: Sendable, Equatable {
    /// `pg_current_wal_lsn()` when the read ran.
    var wal: LSN?
    /// The slot as `pg_replication_slots` shows it (nil: no such slot).
    var slot: SlotState?
    /// The database does not answer (why).
    var problem: String?
}

/// What a token-less `/fresh` question waits for before its watermark query may be sent: every
/// other capturing region's local writes committed before the question arrived are on the topic.
///
/// For each capturing region C: a read of C's WAL position SENT AFTER the question arrived sets
/// the target; a read of C's slot showing `confirmed_flush_lsn ≥ target` (Kafka acknowledged
/// everything up to it) confirms C. Only when every C is confirmed may the watermark query be
/// sent (``ready``): the topic's last stable offsets then cover those writes. Pure: unit-tested.
struct FreshCaptureWait: Sendable, Equatable {
    /// The WAL position each capturing region must confirm (nil: not read since arrival yet).
    private(set) var targets: [String: LSN?]
    private(set) var confirmed: Set<String> = []
    /// Why it is not ready yet (the region named in the problem).
    private(set) var reason: FreshReason = .captureBehind
    private(set) var problem: String?

    init(regions: some Sequence<String>) {
        targets = Dictionary(regions.map { ($0, nil) }, uniquingKeysWith: { a, _ in a })
    }

    /// A capture session token's write: the region's WAL position is known already.
    init(region: String, target: LSN) {
        targets = [region: target]
    }

    var ready: Bool { confirmed.count == targets.count }

    /// Takes a read of region `region`. `sentAfterArrival`: the read was sent after the question
    /// arrived (only such a read may set the target: an earlier WAL position misses writes
    /// committed in between).
    mutating func observe(_ region: String, _ read: FreshCaptureRead, sentAfterArrival: Bool) {
        guard let target = targets[region], !confirmed.contains(region) else { return }
        if let p = read.problem {
            reason = .originDown
            problem = "capturing region \(region): \(p)"
            return
        }
        var goal = target
        if goal == nil, sentAfterArrival, let wal = read.wal {
            goal = wal
            targets[region] = wal
        }
        guard let goal else {
            reason = .captureBehind
            problem = "capturing region \(region): its WAL position is not read yet"
            return
        }
        guard let slot = read.slot else {
            reason = .captureBehind
            problem = "capturing region \(region): its capture slot does not exist"
            return
        }
        if let c = slot.confirmed, c >= goal {
            confirmed.insert(region)
            if ready { problem = nil }
            return
        }
        reason = .captureBehind
        if slot.lost {
            problem = "capturing region \(region): its capture slot was invalidated (wal_status = lost)"
        } else if !slot.active {
            problem = "capturing region \(region): its capture slot is not streaming (confirmed \(slot.confirmed.map { "\($0)" } ?? "none"), needed \(goal))"
        } else {
            problem = "capturing region \(region): Kafka has not acknowledged its writes up to \(goal) yet (confirmed \(slot.confirmed.map { "\($0)" } ?? "none"))"
        }
    }
}

extension FreshJudgement {
    /// The next watermark query may serve a question: it has no round yet, and every capturing
    /// region it waits for confirmed (the query is then sent after their writes were acknowledged).
    static func needsRound(hasRound: Bool, capture: FreshCaptureWait?) -> Bool {
        !hasRound && capture?.ready ?? true
    }
}
