import Testing

@testable import ReplicationCore

/// The `/fresh` rule: what a region's committed offsets, its dead letters and the topic's
/// watermarks make of a question (the traps of docs/metrics.md).
@Suite("Fresh judgement")
struct FreshJudgementTests {
    typealias J = FreshJudgement
    static let scope = FreshToken.scope(clusterID: "c1", topic: "chat.messages")
    let round = J.Round(end: [0: 10, 1: 5], low: [0: 0, 1: 0], scope: scope)

    func read(_ next: [Int32: Int64], dead: [Int32: Set<Int64>] = [:], problem: String? = nil) -> J.RegionRead {
        J.RegionRead(next: next, deadLetters: dead, problem: problem)
    }

    @Test("Token-less: fresh only when every partition's stored offset reaches the end offset read after arrival")
    func plain() {
        #expect(J.verdict(token: nil, round: round, read: read([0: 10, 1: 5]), brokerProblem: nil) == .fresh)
        #expect(J.verdict(token: nil, round: round, read: read([0: 9, 1: 5]), brokerProblem: nil)
                == .wait(.behind, nil, [0: 1]))
        // A partition never stored (no row) counts from 0.
        #expect(J.verdict(token: nil, round: round, read: read([0: 10]), brokerProblem: nil)
                == .wait(.behind, nil, [1: 5]))
        // No watermark query since arrival yet: never fresh, whatever is stored.
        if case .fresh = J.verdict(token: nil, round: nil, read: read([0: 99, 1: 99]), brokerProblem: nil) {
            Issue.record("fresh without a watermark read after arrival")
        }
    }

    @Test("Dead-lettered or retention-deleted records are not held: not fresh, with the reason")
    func holes() {
        #expect(J.verdict(token: nil, round: round, read: read([0: 10, 1: 5], dead: [0: [3]]), brokerProblem: nil)
                == .final(.deadLettered, "dead-lettered records are not applied in this region", [0: 1]))
        let retained = J.Round(end: [0: 10, 1: 5], low: [0: 7, 1: 0], scope: Self.scope)
        if case .final(.expired, _, let missing) = J.verdict(token: nil, round: retained, read: read([0: 4, 1: 5]),
                                                            brokerProblem: nil) {
            #expect(missing == [0: 3])
        } else { Issue.record("a stored offset below the low watermark was not reported") }
        let t = FreshToken(scope: Self.scope, partition: 0, offset: 3)
        if case .final(.deadLettered, _, _) = J.verdict(token: t, round: round, read: read([0: 10], dead: [0: [3]]),
                                                       brokerProblem: nil) {} else { Issue.record("dead-lettered token write called held") }
        if case .final(.expired, _, _) = J.verdict(token: t, round: retained, read: read([0: 10]),
                                                  brokerProblem: nil) {} else { Issue.record("retention-deleted token write called held") }
    }

    @Test("Tokens: only the token's write counts; foreign tokens are refused; down region and capture are not fresh")
    func tokens() {
        let t = FreshToken(scope: Self.scope, partition: 1, offset: 4)
        #expect(J.verdict(token: t, round: round, read: read([0: 0, 1: 5]), brokerProblem: nil) == .fresh)
        #expect(J.verdict(token: t, round: round, read: read([0: 0, 1: 4]), brokerProblem: nil) == .wait(.behind, nil, [1: 1]))
        let foreign = FreshToken(scope: FreshToken.scope(clusterID: "c2", topic: "chat.messages"), partition: 1, offset: 0)
        if case .final(.foreignToken, _, _) = J.verdict(token: foreign, round: round, read: read([1: 5]),
                                                       brokerProblem: nil) {} else { Issue.record("foreign token accepted") }
        let noPartition = FreshToken(scope: Self.scope, partition: 7, offset: 0)
        if case .final(.foreignToken, _, _) = J.verdict(token: noPartition, round: round, read: read([:]),
                                                       brokerProblem: nil) {} else { Issue.record("token of a missing partition accepted") }
        if case .wait(.regionDown, _, _) = J.verdict(token: t, round: round, read: read([1: 5], problem: "down"),
                                                    brokerProblem: nil) {} else { Issue.record("down region not reported") }
    }

    @Test("Token encoding round-trips; hostile text is refused, never trapped on")
    func encoding() throws {
        let t = FreshToken(scope: Self.scope, partition: 5, offset: 1_234_567_890_123)
        #expect(t.encoded.count == 28)
        // The Python reference producer's encoding of the same write (examples/python).
        #expect(t.encoded == "AULxgwtn05eSAAAABQAAAR9x-wTL")
        #expect(try FreshToken(encoded: t.encoded) == t)
        for bad in ["", "x", String(repeating: "A", count: 28), String(repeating: "/", count: 28), t.encoded + "A",
                    "é" + t.encoded.dropFirst(2), String(repeating: "_", count: 28)] {
            #expect(throws: FreshToken.Malformed.self, "\(bad)") { try FreshToken(encoded: bad) }
        }
    }
}
