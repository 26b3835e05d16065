/// When to try something again that keeps failing, with capped exponential backoff: armed the
/// first time it is needed, due after the backoff's delay, reset once nothing is needed.
struct RetryTimer {
    private var backoff: Backoff
    private var dueAt: ContinuousClock.Instant?

    init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        backoff = Backoff(initial: initial, maximum: maximum)
    }

    /// Attempts made since the last reset.
    var attempts: Int { backoff.attempt }

    /// Whether to try now, when `needed`: the first call arms the timer, later ones say true
    /// once it is due (and arm it again, with a longer delay, for the next attempt).
    mutating func due(needed: Bool, now: ContinuousClock.Instant = .now) -> Bool {
        guard needed else { return false }
        guard let at = dueAt else {
            dueAt = now.advanced(by: backoff.next())
            return false
        }
        guard now >= at else { return false }
        dueAt = now.advanced(by: backoff.next())
        return true
    }

    /// Nothing is needed any more: the next need starts from the shortest delay.
    mutating func reset() {
        backoff = Backoff(initial: backoff.initial, maximum: backoff.maximum)
        dueAt = nil
    }
}
