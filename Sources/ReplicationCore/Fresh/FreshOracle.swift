import Foundation
public import KafkaClient
public import Logging
public import ServiceLifecycle

/// Answers `/fresh`: has a region applied every event that was on the topic when the question
/// arrived (or, with a session token, that one write)?
///
/// From what each region COMMITTED (its stored offsets in its own database), never from this
/// process's memory, so that any instance answers for every region. Coalesced: waiters share
/// one watermark query (sent after every one of them arrived, at most one per ``roundInterval``)
/// and one read of each region's stored offsets per round; a region's reader reads again when
/// this process commits a batch for it and otherwise every ``pollInterval`` while someone waits
/// (partitions another instance applies). Every blocking call (librdkafka, libpq) runs on the
/// oracle's own threads, and each thread is woken only when there is work for it (``Bell``): a
/// request costs one continuation, not a task per deadline or a wake-up of every thread.
public final class FreshOracle: Service, @unchecked Sendable {
    // @unchecked Sendable: all mutable state is guarded by `cond`.
    struct Waiter {
        var region: String
        var token: FreshToken?
        var arrived: ContinuousClock.Instant
        /// `arrived` + wait_ms: from then on the first measurement is the answer.
        var deadline: ContinuousClock.Instant
        var round: FreshJudgement.Round?
        /// Token-less with other capturing regions: their writes before arrival must be on the
        /// topic (their slots confirmed) before the watermark query is sent (nil: nothing to wait for).
        var capture: FreshCaptureWait?
        /// The scope of a capture session token (checked against the topic's once known).
        var captureScope: UInt64?
        /// The region's read count when `round` was assigned: a read after it measures the round.
        var readsAtRound = 0
        var expired = false
        var continuation: CheckedContinuation<FreshAnswer, Never>?

        /// Past its deadline: from the deadline on, not from when the timer's expiry ran (with
        /// wait_ms=0 that may run before the waiter is registered, and then finds nothing).
        func isExpired(at now: ContinuousClock.Instant) -> Bool { expired || now >= deadline }
    }

    public let topic: String
    let regions: [String: FreshRegion]
    let kafka: KafkaConfiguration
    let maxWaiters: Int
    let pollInterval: Duration
    /// The least time between the starts of two watermark queries: waiters arriving meanwhile
    /// share the next one (at 1,000 requests/s, ~10 per query instead of one query each).
    let roundInterval: Duration
    /// After its deadline, a waiter not measured yet gets this much longer, then what is known.
    static let grace: Duration = .seconds(1)
    let logger: Logger

    let cond = NSCondition()
    var waiters: [Int: Waiter] = [:]
    var nextID = 0
    var reads: [String: FreshJudgement.RegionRead] = [:]
    var readCounts: [String: Int] = [:]
    var wake: Set<String> = []
    var brokerProblem: String?
    var stopped = false
    /// The topic's scope, once a watermark query has told it.
    var knownScope: UInt64?
    /// Watermark queries sent so far (each serves every waiter that arrived before it).
    var roundsSent = 0
    /// When the last watermark query was sent.
    var lastRoundStart: ContinuousClock.Instant?
    /// Each thread's bell, rung (under `cond`) when there is work for it.
    let watermarkBell = Bell()
    let deadlineBell = Bell()
    let regionBells: [String: Bell]
    /// The watermark thread waits out `roundInterval` (a new waiter need not wake it).
    var watermarkPacing = false
    /// When the deadline thread wakes next (guarded by `cond`).
    var nextDeadlineCheck: ContinuousClock.Instant?

    /// - Parameters:
    ///   - kafka: the connection properties (a group-less read_committed consumer is made).
    ///   - status: its commits wake the waiters of the committing region.
    public init(regions: [FreshRegion], kafka: KafkaConfiguration, topic: String, status: ReplicationStatus?,
                maxWaiters: Int, pollInterval: Duration = .milliseconds(25), roundInterval: Duration = .milliseconds(10),
                logger: Logger) {
        self.regions = Dictionary(regions.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.regionBells = Dictionary(regions.map { ($0.name, Bell()) }, uniquingKeysWith: { a, _ in a })
        self.roundInterval = roundInterval
        var conf = kafka
        conf.set("socket.timeout.ms", "3000")
        conf.set("isolation.level", "read_committed")
        self.kafka = conf
        self.topic = topic
        self.maxWaiters = maxWaiters
        self.pollInterval = pollInterval
        var logger = logger
        logger[metadataKey: "loop"] = "fresh"
        self.logger = logger
        status?.onCommit { [weak self] region in self?.progress(region: region) }
    }

    public var regionNames: [String] { regions.keys.sorted() }

    public func run() async throws {
        await withGracefulShutdownAndCancellation(onStop: { self.stop() }) {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await BlockingThread.run(name: "fresh-watermarks") { self.watermarkLoop() } }
                group.addTask { await BlockingThread.run(name: "fresh-deadlines") { self.deadlineLoop() } }
                for region in self.regions.values {
                    group.addTask { await BlockingThread.run(name: "fresh-\(region.name)") { self.regionLoop(region) } }
                }
            }
        }
    }

    /// Stops the threads and answers every waiter with what is known.
    public func stop() {
        cond.lock()
        stopped = true
        let done = waiters.keys.map { answerLocked($0, force: true) }
        for bell in [watermarkBell, deadlineBell] + regionBells.values { bell.ringLocked() }
        cond.unlock()
        for d in done { d?() }
    }

    /// This process committed a batch for `region`.
    func progress(region: String) {
        cond.lock()
        wake.insert(region)
        if needsRead(region) { regionBells[region]?.ringLocked() }
        cond.unlock()
    }

    /// The answer for `region` (nil: not configured), waiting up to `wait` for it to be fresh.
    /// `captureToken`: a local write in a capturing region (the region's slot must confirm its
    /// WAL position, then `region` must reach the watermarks read after that).
    public func ask(region: String, token: FreshToken?, captureToken: FreshCaptureToken? = nil, wait: Duration) async -> FreshAnswer? {
        guard let config = regions[region] else { return nil }
        let arrived = ContinuousClock.now
        let capture: FreshCaptureWait?
        if let t = captureToken {
            let scope = cond.withLock { knownScope }
            func answer(_ reason: FreshReason?, _ problem: String?) -> FreshAnswer {
                FreshAnswer(region: region, fresh: reason == nil, waitedMs: 0, reason: reason, problem: problem, missing: [:], token: true)
            }
            if let scope, scope != t.scope { return answer(.foreignToken, "the token is of another cluster or topic") }
            guard regions[t.region]?.capturing == true else {
                return answer(.foreignToken, "the token names region \(t.region), which is not a capturing region here")
            }
            // The region's own local write: it holds it.
            if t.region == region { return answer(nil, nil) }
            capture = FreshCaptureWait(region: t.region, target: t.lsn)
        } else {
            capture = captureWait(for: config.name, token: token)
        }
        let id: Int = cond.withLock {
            nextID += 1
            return nextID
        }
        // One continuation: the oracle's threads resume it — a measurement, or the deadline
        // thread at the deadline (then at the deadline + ``grace`` with whatever is known).
        return await withCheckedContinuation { (c: CheckedContinuation<FreshAnswer, Never>) in
            self.register(id, Waiter(region: config.name, token: token, arrived: arrived, deadline: arrived.advanced(by: wait),
                                      capture: capture, captureScope: captureToken?.scope, continuation: c))
        }
    }

    /// What a question waits for before its watermark query: nil with a token (it is about
    /// one record on the topic) or when no other region captures. The region asked about holds
    /// its own local writes.
    func captureWait(for region: String, token: FreshToken?) -> FreshCaptureWait? {
        guard token == nil else { return nil }
        let others = regions.values.filter { $0.capturing && $0.name != region }.map(\.name)
        return others.isEmpty ? nil : FreshCaptureWait(regions: others)
    }

    func register(_ id: Int, _ waiter: Waiter) {
        cond.lock()
        if stopped || waiters.count >= maxWaiters {
            cond.unlock()
            let answer = FreshAnswer(region: waiter.region, fresh: false, waitedMs: 0,
                                     reason: stopped ? .regionDown : .overloaded,
                                     problem: stopped ? "shutting down" : "too many requests are waiting (http.fresh_max_waiters \(maxWaiters))",
                                     missing: [:], token: waiter.token != nil)
            waiter.continuation?.resume(returning: answer)
            return
        }
        // No read of the region asked about is asked for here: nothing can be fresh before the
        // next watermark query, and the read after it serves every waiter of the region at once.
        // Only the threads with work are woken: the watermark thread for a waiter it serves, the
        // capturing regions' readers for one that waits for their slots, the deadline thread
        // for a deadline before its next check.
        waiters[id] = waiter
        let done = answerLocked(id, force: false)
        if done == nil {
            if Self.needsRound(waiter) && !watermarkPacing { watermarkBell.ringLocked() }
            if let targets = waiter.capture?.targets { for region in targets.keys { regionBells[region]?.ringLocked() } }
            // Its next deadline event: the deadline, or (wait_ms=0: past already) the end of the grace.
            let now = ContinuousClock.now
            let event = waiter.deadline > now ? waiter.deadline : waiter.deadline.advanced(by: Self.grace)
            // Lowered here too: the thread may be between its scan and its sleep (not ringable).
            if let check = nextDeadlineCheck, event < check {
                nextDeadlineCheck = event
                deadlineBell.ringLocked()
            }
        }
        cond.unlock()
        done?()
    }

    /// The deadline thread: answers each waiter at its deadline when it is measured (a
    /// watermark query or region read since it arrived told the answer), and at its deadline +
    /// ``grace`` with whatever is known.
    func deadlineLoop() {
        cond.lock()
        while !stopped {
            let now = ContinuousClock.now
            var next = now.advanced(by: .milliseconds(250))
            var done: [() -> Void] = []
            for (id, w) in waiters {
                if now >= w.deadline.advanced(by: Self.grace) {
                    if let d = answerLocked(id, force: true) { done.append(d) }
                } else if now >= w.deadline {
                    if !w.expired {
                        waiters[id]!.expired = true
                        if let d = answerLocked(id, force: false) { done.append(d) }
                    }
                    if waiters[id] != nil { next = min(next, w.deadline.advanced(by: Self.grace)) }
                } else {
                    next = min(next, w.deadline)
                }
            }
            nextDeadlineCheck = next
            cond.unlock()
            for d in done { d() }
            cond.lock()
            // Until the earliest of `next` and any deadline registered since the scan.
            let until = min(next, nextDeadlineCheck ?? next)
            if !stopped && ContinuousClock.now < until { deadlineBell.sleep(cond, until: until) }
        }
        cond.unlock()
    }

    /// Evaluates waiter `id`; when it is decided, removes it and returns the resumption to run
    /// after unlocking. Caller holds `cond`.
    func answerLocked(_ id: Int, force: Bool) -> (() -> Void)? {
        guard let w = waiters[id], regions[w.region] != nil else { return nil }
        let read = reads[w.region]
        let verdict: FreshJudgement.Verdict
        var measured = w.round != nil && (readCounts[w.region] ?? 0) > w.readsAtRound
        if let capture = w.capture, !capture.ready {
            // A capturing region's writes may still be missing from the topic: no round yet.
            verdict = .wait(capture.reason, capture.problem ?? "waiting for the capturing regions' slots", [:])
            measured = capture.problem != nil
        } else if let scope = w.captureScope, let round = w.round, round.scope != scope {
            verdict = .final(.foreignToken, "the token is of another cluster or topic", [:])
        } else {
            verdict = FreshJudgement.verdict(token: w.token, round: w.round, read: read, brokerProblem: brokerProblem)
        }
        let answer: FreshAnswer
        let waited = Int64(clamping: (ContinuousClock.now - w.arrived).milliseconds)
        switch verdict {
        case .fresh:
            answer = FreshAnswer(region: w.region, fresh: true, waitedMs: waited, reason: nil, problem: nil, missing: [:],
                                 token: w.token != nil || w.captureScope != nil)
        case .final(let reason, let problem, let missing):
            // A region read from before the round (e.g. before a dead letter was resolved) is
            // not the answer: wait for the read after it.
            guard measured || reason == .foreignToken || force || stopped else { return nil }
            answer = FreshAnswer(region: w.region, fresh: false, waitedMs: waited, reason: reason, problem: problem,
                                 missing: missing, token: w.token != nil || w.captureScope != nil)
        case .wait(let reason, let problem, let missing):
            let known = measured || reason == .regionDown && read != nil || reason == .brokerUnavailable
            let expired = w.isExpired(at: .now)
            guard force || stopped || (expired && known) else { return nil }
            answer = FreshAnswer(region: w.region, fresh: false, waitedMs: waited, reason: reason, problem: problem,
                                 missing: missing, token: w.token != nil || w.captureScope != nil)
        }
        waiters[id] = nil
        guard let c = w.continuation else { return nil }
        return { c.resume(returning: answer) }
    }

    /// Evaluates every waiter of `region` (all when nil). Caller holds `cond`.
    func answerAllLocked(region: String?) -> [() -> Void] {
        waiters.compactMap { id, w in region == nil || w.region == region ? answerLocked(id, force: false) : nil }
    }
}

extension FreshOracle {
    /// A thread's doorbell: it sleeps on it (releasing `cond`) until rung or a time passes. Rung
    /// under `cond` only when it sleeps, so that a request wakes the threads with work, not all.
    final class Bell: @unchecked Sendable {
        // @unchecked Sendable: `sleeping` is guarded by the oracle's `cond`.
        private let semaphore = DispatchSemaphore(value: 0)
        private var sleeping = false

        /// Wakes the thread if it sleeps. Caller holds `cond`.
        func ringLocked() {
            guard sleeping else { return }
            sleeping = false
            semaphore.signal()
        }

        /// Caller holds `cond`: releases it, sleeps until rung or `until`, and takes it again. A
        /// ring after the time passed leaves one spurious wake-up, never a lost one (the thread
        /// checks its work under `cond` before it sleeps).
        func sleep(_ cond: NSCondition, until: ContinuousClock.Instant) {
            sleeping = true
            cond.unlock()
            let left = max(.zero, until - ContinuousClock.now)
            _ = semaphore.wait(timeout: .now() + left.seconds)
            cond.lock()
            sleeping = false
        }
    }
}
