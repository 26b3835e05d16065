import Foundation
import KafkaClient
import Logging
import Testing

@testable import ReplicationCore

/// The oracle's waiter book without its threads: the order in which `ask`'s two tasks (the
/// waiter's registration and its deadline timer) run must not change when a waiter is answered.
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

    @Test("wait_ms=0 registered after its deadline timer ran: the first failed watermark query answers it (no further round, no grace)")
    func zeroWaitRegisteredLate() async throws {
        let oracle = try Self.oracle()
        // With wait_ms=0 the timer's sleep returns at once: its expiry may run before the waiter
        // is registered, and then finds nothing. This is the state that leaves: a waiter whose
        // deadline is its arrival, registered, and no expiry since.
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
}
