import Testing
@testable import ReplicationCore

/// What follows an apply attempt, case by case: the pure decisions `RegionPipeline` performs.
@Suite("ApplyPolicy: what follows an apply attempt")
struct ApplyPolicyTests {
    /// The retry a decision asks for (fails the test when it is something else).
    func retry(_ d: ApplyPolicy.Decision, sourceLocation: SourceLocation = #_sourceLocation) -> ApplyPolicy.Retry? {
        guard case .backOff(let r) = d else {
            Issue.record("expected a back-off, got \(d)", sourceLocation: sourceLocation)
            return nil
        }
        return r
    }

    @Test("A commit carries on; the chunk limit stays at the maximum")
    func commitCarriesOn() {
        var p = ApplyPolicy(maxChunk: 500)
        #expect(p.after(.committed(records: 500)) == .next(recoveredAfter: nil))
        #expect(p.chunkLimit == 500)
    }

    @Test("Transient failures back off with growing, capped, jittered delays and count their attempts")
    func transientBacksOff() throws {
        var p = ApplyPolicy(maxChunk: 500)
        var caps: [Duration] = []
        for attempt in 1...8 {
            let r = try #require(retry(p.after(.failed(.transient, records: 500))))
            #expect(r.attempt == attempt && !r.schema)
            let cap = min(Duration.milliseconds(100) * (1 << (attempt - 1)), .seconds(5))
            #expect(r.delay >= cap / 2 && r.delay <= cap, "attempt \(attempt): \(r.delay) outside \(cap / 2)…\(cap)")
            caps.append(cap)
        }
        #expect(caps.last == .seconds(5))
        #expect(p.chunkLimit == 500, "a transient failure never shrinks the batch")
    }

    @Test("A schema problem backs off slowly (5 s … 60 s) and says so")
    func schemaBacksOffSlowly() throws {
        var p = ApplyPolicy(maxChunk: 500)
        let first = try #require(retry(p.after(.failed(.schema, records: 10))))
        #expect(first.schema && first.attempt == 1)
        #expect(first.delay >= .milliseconds(2500) && first.delay <= .seconds(5))
        for _ in 0..<10 { _ = p.after(.failed(.schema, records: 10)) }
        let late = try #require(retry(p.after(.failed(.schema, records: 10))))
        #expect(late.attempt == 12 && late.delay <= .seconds(60) && late.delay >= .seconds(30))
    }

    @Test("A commit after failures reports the recovery (every failed attempt) and starts the backoffs over")
    func recoveryResetsBackoffs() throws {
        var p = ApplyPolicy(maxChunk: 100)
        _ = p.after(.failed(.transient, records: 100))
        _ = p.after(.failed(.transient, records: 100))
        _ = p.after(.failed(.schema, records: 100))
        #expect(p.after(.committed(records: 100)) == .next(recoveredAfter: 3))
        #expect(p.after(.committed(records: 100)) == .next(recoveredAfter: nil))
        let r = try #require(retry(p.after(.failed(.transient, records: 100))))
        #expect(r.attempt == 1 && r.delay <= .milliseconds(100))
    }

    @Test("startApplying starts the backoffs over but keeps the chunk limit")
    func startApplyingResetsBackoffsOnly() throws {
        var p = ApplyPolicy(maxChunk: 100)
        _ = p.after(.failed(.split, records: 100))
        _ = p.after(.failed(.transient, records: 50))
        _ = p.after(.failed(.transient, records: 50))
        p.startApplying()
        #expect(p.chunkLimit == 50)
        let r = try #require(retry(p.after(.failed(.transient, records: 50))))
        #expect(r.attempt == 1)
        #expect(p.after(.committed(records: 50)) == .next(recoveredAfter: 1))
    }

    @Test("A batch too big or too slow is halved at once, down to one record", arguments: [
        (500, [250, 125, 62, 31, 15, 7, 3, 1]),
        (2, [1]),
        (7, [3, 1]),
    ])
    func splitHalves(start: Int, limits: [Int]) {
        var p = ApplyPolicy(maxChunk: start)
        var records = start
        for limit in limits {
            #expect(p.after(.failed(.split, records: records)) == .split(chunkLimit: limit))
            #expect(p.chunkLimit == limit)
            records = limit
        }
    }

    @Test("A split halves the records that failed, not the limit (a short last chunk)")
    func splitHalvesTheFailedChunk() {
        var p = ApplyPolicy(maxChunk: 500)
        #expect(p.after(.failed(.split, records: 40)) == .split(chunkLimit: 20))
    }

    @Test("The chunk limit doubles back after 8 clean transactions, up to the maximum; a split starts the count over")
    func chunkLimitGrowsBack() {
        var p = ApplyPolicy(maxChunk: 100)
        _ = p.after(.failed(.split, records: 100))
        _ = p.after(.failed(.split, records: 50))
        #expect(p.chunkLimit == 25)
        for _ in 0..<7 { _ = p.after(.committed(records: 25)) }
        #expect(p.chunkLimit == 25)
        _ = p.after(.failed(.split, records: 25))  // the count starts over
        #expect(p.chunkLimit == 12)
        for _ in 0..<7 { _ = p.after(.committed(records: 12)) }
        #expect(p.chunkLimit == 12)
        _ = p.after(.committed(records: 12))
        #expect(p.chunkLimit == 24)
        for _ in 0..<8 { _ = p.after(.committed(records: 24)) }
        #expect(p.chunkLimit == 48)
        for _ in 0..<8 { _ = p.after(.committed(records: 48)) }
        #expect(p.chunkLimit == 96)
        for _ in 0..<8 { _ = p.after(.committed(records: 96)) }
        #expect(p.chunkLimit == 100, "never above the maximum")
        for _ in 0..<8 { _ = p.after(.committed(records: 100)) }
        #expect(p.chunkLimit == 100)
    }

    @Test("A single record the region cannot take even alone (too large) becomes a dead letter")
    func splitAloneIsDeadLettered() {
        var p = ApplyPolicy(maxChunk: 500)
        #expect(p.after(.failed(.split, records: 1)) == .deadLetter)
        #expect(p.chunkLimit == 500, "a one-record chunk that fails changes no limit")
    }

    @Test("Writing the dead letter fails: back off (transient), or follow moved offsets")
    func deadLetterFailed() throws {
        var p = ApplyPolicy(maxChunk: 1)
        #expect(p.after(.failed(.split, records: 1)) == .deadLetter)
        let r = try #require(retry(p.after(.deadLetterFailed(.transient))))
        #expect(r.attempt == 1 && !r.schema)
        let s = try #require(retry(p.after(.deadLetterFailed(.schema))))
        #expect(s.attempt == 2 && !s.schema)
        #expect(p.after(.deadLetterFailed(.offsetsMoved)) == .followStoredOffsets)
    }

    @Test("Moved stored offsets are followed; no backoff, no change of the chunk limit")
    func offsetsMovedAreFollowed() throws {
        var p = ApplyPolicy(maxChunk: 500)
        #expect(p.after(.failed(.offsetsMoved, records: 500)) == .followStoredOffsets)
        #expect(p.after(.failed(.offsetsMoved, records: 1)) == .followStoredOffsets)
        #expect(p.chunkLimit == 500)
        let r = try #require(retry(p.after(.failed(.transient, records: 500))))
        #expect(r.attempt == 1)
    }

    @Test("A data error that escapes the applier's own bisection is retried, never dead-lettered here")
    func dataErrorOutsideBisectionIsRetried() throws {
        var p = ApplyPolicy(maxChunk: 500)
        let r = try #require(retry(p.after(.failed(.deadLetter, records: 1))))
        #expect(r.attempt == 1 && !r.schema)
    }

    @Test("A batch cut short (statement timeout, cancel) is halved, but a single record is retried with backoff, never dead-lettered")
    func slowIsHalvedButNeverPoison() throws {
        var p = ApplyPolicy(maxChunk: 64)
        var records = 64
        for limit in [32, 16, 8, 4, 2, 1] {
            #expect(p.after(.failed(.slow, records: records)) == .split(chunkLimit: limit))
            records = limit
        }
        for attempt in 1...20 {
            let r = try #require(retry(p.after(.failed(.slow, records: 1))))
            #expect(r.attempt == attempt && !r.schema && r.delay <= .seconds(5))
        }
        #expect(p.after(.committed(records: 1)) == .next(recoveredAfter: 20))
    }

    @Test("A record becomes a dead letter only for a reason of its own content: of every failure class alone, only 'too big'",
          arguments: ApplyFailure.allCases)
    func onlyContentIsPoison(_ failure: ApplyFailure) {
        var p = ApplyPolicy(maxChunk: 500)
        let decision = p.after(.failed(failure, records: 1))
        #expect((decision == .deadLetter) == (failure == .split), "\(failure) alone: \(decision)")
    }

    @Test("A maximum below one is one")
    func maximumAtLeastOne() {
        let p = ApplyPolicy(maxChunk: 0)
        #expect(p.chunkLimit == 1 && p.maxChunk == 1)
    }
}
