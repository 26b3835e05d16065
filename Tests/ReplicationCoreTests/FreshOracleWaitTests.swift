import Foundation
import KafkaClient
import Logging
import Testing

@testable import ReplicationCore

/// The oracle's waiter book without its broker and database threads: the order in which a
/// waiter's registration, its measurements and its deadline come must not change its answer.
@Suite("Fresh oracle waiters")
struct FreshOracleWaitTests {
    /// An oracle that is never run: no thread asks a broker or a database; the test plays the
    /// watermark thread itself.
    static func oracle() throws -> FreshOracle {
        FreshOracle(regions: [FreshRegion(name: "a", conninfo: "host=127.0.0.1 port=1", table: try TableName(validating: "messages"),
                                          consumerGroup: "g", captureSlot: nil)],
                    kafka: KafkaConfiguration([("bootstrap.servers", "127.0.0.1:1")]), topic: "chat.messages", status: nil,
                    maxWaiters: 10, logger: Logger(label: "test"))
    }

    @Test("wait_ms=0, registered past its deadline: the first failed watermark query answers it (no further round, no grace)")
    func zeroWaitRegisteredLate() async throws {
        let oracle = try Self.oracle()
        // With wait_ms=0 the deadline is the arrival: the waiter is past it when registered, and
        // no deadline event will come for it before the grace ends.
        let arrived = ContinuousClock.now
        let answer = Task {
            await withCheckedContinuation { (c: CheckedContinuation<FreshAnswer, Never>) in
                oracle.register(1, .init(region: "a", token: nil, arrived: arrived, deadline: arrived, round: nil,
                                         capture: nil, captureScope: nil, continuation: c))
            }
        }
        let registeredBy = ContinuousClock.now.advanced(by: .seconds(30))
        while oracle.cond.withLock({ oracle.waiters[1] == nil }), ContinuousClock.now < registeredBy {
            try await Task.sleep(for: .milliseconds(1))
        }
        #expect(oracle.cond.withLock { oracle.waiters[1] != nil }, "the waiter was answered before any watermark query")
        // The watermark thread's query for it fails (broker down): that is the first measurement,
        // and past the deadline the first measurement is the answer.
        let done = oracle.cond.withLock { oracle.roundFailedLocked(ids: [1], problem: "broker down") }
        for d in done { d() }
        let decided = oracle.cond.withLock { oracle.waiters[1] == nil }
        #expect(decided, "a wait_ms=0 waiter was left waiting after the failed watermark query that should answer it")
        if !decided { oracle.stop() }  // release the continuation (answers with what is known)
        let a = await answer.value
        #expect(!a.fresh && a.reason == .brokerUnavailable, "\(a)")
    }

    @Test("wait_ms>0 not yet past its deadline: a failed watermark query does not answer it early")
    func waitingNotAnsweredEarly() async throws {
        let oracle = try Self.oracle()
        let arrived = ContinuousClock.now
        let answer = Task {
            await withCheckedContinuation { (c: CheckedContinuation<FreshAnswer, Never>) in
                oracle.register(1, .init(region: "a", token: nil, arrived: arrived, deadline: arrived.advanced(by: .seconds(3600)),
                                         round: nil, capture: nil, captureScope: nil, continuation: c))
            }
        }
        let registeredBy = ContinuousClock.now.advanced(by: .seconds(30))
        while oracle.cond.withLock({ oracle.waiters[1] == nil }), ContinuousClock.now < registeredBy {
            try await Task.sleep(for: .milliseconds(1))
        }
        let done = oracle.cond.withLock { oracle.roundFailedLocked(ids: [1], problem: "broker down") }
        for d in done { d() }
        #expect(oracle.cond.withLock { oracle.waiters[1] != nil }, "answered before its deadline")
        oracle.stop()
        let a = await answer.value
        #expect(!a.fresh, "\(a)")
    }

    @Test("The deadline thread: a measured waiter is answered at its deadline, not before; one never measured at deadline + grace")
    func deadlines() async throws {
        // Two oracles: a failed query's broker problem is known to every waiter of its oracle.
        let (first, second) = (try Self.oracle(), try Self.oracle())
        for o in [first, second] { Thread { o.deadlineLoop() }.start() }
        defer { for o in [first, second] { o.stop() } }
        func ask(_ oracle: FreshOracle, wait: Duration) async throws -> Task<(FreshAnswer, Duration), Never> {
            let arrived = ContinuousClock.now
            let task = Task {
                let a = await withCheckedContinuation { (c: CheckedContinuation<FreshAnswer, Never>) in
                    oracle.register(1, .init(region: "a", token: nil, arrived: arrived, deadline: arrived.advanced(by: wait),
                                             round: nil, capture: nil, captureScope: nil, continuation: c))
                }
                return (a, ContinuousClock.now - arrived)
            }
            let registeredBy = ContinuousClock.now.advanced(by: .seconds(30))
            while oracle.cond.withLock({ oracle.waiters.isEmpty }), ContinuousClock.now < registeredBy {
                try await Task.sleep(for: .milliseconds(1))
            }
            return task
        }
        let measured = try await ask(first, wait: .milliseconds(300)), never = try await ask(second, wait: .milliseconds(100))
        // The first's watermark query fails before its deadline: known, but answered only then.
        let early = first.cond.withLock { first.roundFailedLocked(ids: [1], problem: "broker down") }
        #expect(early.isEmpty, "answered before its deadline")
        let (a1, t1) = await measured.value
        #expect(!a1.fresh && a1.reason == .brokerUnavailable, "\(a1)")
        #expect(t1 >= .milliseconds(300), "answered after \(t1), before its 300 ms deadline")
        // The second is never measured (no query, no read): what is known, after the grace.
        let (a2, t2) = await never.value
        #expect(!a2.fresh, "\(a2)")
        #expect(t2 >= .milliseconds(100) + FreshOracle.grace, "answered after \(t2), before deadline + grace")
    }
}
