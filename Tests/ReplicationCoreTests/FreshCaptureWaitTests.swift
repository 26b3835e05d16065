import Testing

@testable import ReplicationCore

/// A token-less `/fresh` under capture: another region's local write, committed before the
/// question, only counts as on the topic once that region's slot confirmed a WAL position read
/// after the question arrived; only a watermark query sent after that covers it.
@Suite("Fresh judgement under capture")
struct FreshCaptureWaitTests {
    typealias J = FreshJudgement
    static let scope = FreshToken.scope(clusterID: "c1", topic: "chat.messages")
    static let target = LSN(0x1000)

    static func slot(confirmed: UInt64, active: Bool = true, walStatus: String = "reserved") -> SlotState {
        SlotState(active: active, walStatus: walStatus, retainedBytes: 0, confirmed: LSN(confirmed))
    }

    static func read(confirmed: UInt64, wal: UInt64 = 0x1000) -> FreshCaptureRead {
        FreshCaptureRead(wal: LSN(wal), slot: slot(confirmed: confirmed), problem: nil)
    }

    @Test("every order of 'capture confirmed', 'watermark read', 'offsets committed': fresh only when the region holds the write")
    func interleavings() {
        enum Event: CaseIterable { case captureConfirmed, watermarkRead, offsetsCommitted }
        let orders: [[Event]] = [
            [.captureConfirmed, .watermarkRead, .offsetsCommitted], [.captureConfirmed, .offsetsCommitted, .watermarkRead],
            [.watermarkRead, .captureConfirmed, .offsetsCommitted], [.watermarkRead, .offsetsCommitted, .captureConfirmed],
            [.offsetsCommitted, .captureConfirmed, .watermarkRead], [.offsetsCommitted, .watermarkRead, .captureConfirmed],
        ]
        var freshOrders = 0
        for order in orders {
            // The write of region "a", committed before the question, at WAL ≤ target; published
            // as partition 0 offset 5 once Kafka acknowledged it (the slot then confirms).
            var acked = false
            var end: Int64 = 5
            var next: Int64 = 5
            var round: J.Round?
            var wait = FreshCaptureWait(regions: ["a"])
            var first = true
            var answers: [J.Verdict] = []
            for event in order {
                switch event {
                case .captureConfirmed:
                    acked = true
                    end = 6
                case .watermarkRead:
                    if J.needsRound(hasRound: round != nil, capture: wait) {
                        round = J.Round(end: [0: end], low: [0: 0], scope: Self.scope)
                    }
                case .offsetsCommitted:
                    next = end
                }
                // After each event the capturing region is read (the first read after arrival sets the target).
                wait.observe("a", Self.read(confirmed: acked ? 0x1000 : 0x0FFF), sentAfterArrival: first)
                first = false
                let verdict: J.Verdict = wait.ready
                    ? J.verdict(token: nil, round: round, read: J.RegionRead(next: [0: next], deadLetters: [:], problem: nil), brokerProblem: nil)
                    : .wait(wait.reason, wait.problem, [:])
                answers.append(verdict)
                if verdict == .fresh {
                    #expect(next > 5, "fresh before the region holds the write: \(order)")
                    freshOrders += 1
                }
            }
            // Fresh in the end exactly when the capture confirmed first: a watermark query before
            // it serves nobody, offsets committed before it do not cover the write.
            #expect((answers.last == .fresh) == (order.first == .captureConfirmed), "\(order): \(answers)")
        }
        #expect(freshOrders == 2)
    }

    @Test("a WAL position read before the question arrived does not set the target")
    func earlyReadIgnored() {
        var wait = FreshCaptureWait(regions: ["a"])
        wait.observe("a", Self.read(confirmed: 0x0800, wal: 0x0800), sentAfterArrival: false)
        #expect(!wait.ready && wait.reason == .captureBehind)
        wait.observe("a", Self.read(confirmed: 0x0800, wal: 0x1000), sentAfterArrival: true)
        #expect(!wait.ready)
        #expect(wait.targets["a"] == .some(LSN(0x1000)))
        // A later read's WAL position does not move the target.
        wait.observe("a", Self.read(confirmed: 0x1000, wal: 0x2000), sentAfterArrival: true)
        #expect(wait.ready && wait.problem == nil)
    }

    @Test("origin down, slot lost, missing or not streaming: not ready, with the reason; every region must confirm")
    func reasons() {
        var wait = FreshCaptureWait(regions: ["a", "b"])
        wait.observe("a", FreshCaptureRead(wal: nil, slot: nil, problem: "connection refused"), sentAfterArrival: true)
        #expect(!wait.ready && wait.reason == .originDown && wait.problem?.contains("connection refused") == true)
        wait.observe("a", FreshCaptureRead(wal: LSN(0x10), slot: nil, problem: nil), sentAfterArrival: true)
        #expect(wait.reason == .captureBehind && wait.problem?.contains("does not exist") == true)
        wait.observe("a", FreshCaptureRead(wal: LSN(0x10), slot: Self.slot(confirmed: 0x8, walStatus: "lost"), problem: nil),
                     sentAfterArrival: true)
        #expect(wait.reason == .captureBehind && wait.problem?.contains("lost") == true)
        wait.observe("a", FreshCaptureRead(wal: LSN(0x10), slot: Self.slot(confirmed: 0x8, active: false), problem: nil),
                     sentAfterArrival: true)
        #expect(wait.problem?.contains("not streaming") == true)
        wait.observe("a", Self.read(confirmed: 0x10, wal: 0x20), sentAfterArrival: true)
        #expect(!wait.ready, "b has not confirmed")
        #expect(!J.needsRound(hasRound: false, capture: wait))
        wait.observe("b", Self.read(confirmed: 0x30, wal: 0x30), sentAfterArrival: true)
        #expect(wait.ready && J.needsRound(hasRound: false, capture: wait))
        #expect(!J.needsRound(hasRound: true, capture: wait))
        #expect(J.needsRound(hasRound: false, capture: nil))
    }

    @Test("capture session tokens: round-trip; a version-1 token or hostile text is not one; a preset target waits for the slot only")
    func captureTokens() throws {
        let t = FreshCaptureToken(scope: Self.scope, region: "eu-west-1", lsn: LSN(0x1_0000_2000))
        #expect(try FreshCaptureToken(encoded: t.encoded) == t)
        let offsetToken = FreshToken(scope: Self.scope, partition: 1, offset: 4).encoded
        #expect(throws: FreshToken.Malformed.self) { try FreshCaptureToken(encoded: offsetToken) }
        #expect(throws: FreshToken.Malformed.self) { try FreshToken(encoded: t.encoded) }
        for hostile in ["", "AgAAAAAAAAAAAAAAAAAAAAAA", String(repeating: "A", count: 200), "Ag+/AAAAAAAAAAAAAAAAAAAAAA", "é" + t.encoded] {
            #expect(throws: FreshToken.Malformed.self) { try FreshCaptureToken(encoded: hostile) }
        }
        var wait = FreshCaptureWait(region: "a", target: LSN(0x50))
        wait.observe("a", Self.read(confirmed: 0x40, wal: 0x90), sentAfterArrival: true)
        #expect(!wait.ready && wait.targets["a"] == .some(LSN(0x50)))
        wait.observe("a", Self.read(confirmed: 0x50, wal: 0x90), sentAfterArrival: false)
        #expect(wait.ready)
    }
}
