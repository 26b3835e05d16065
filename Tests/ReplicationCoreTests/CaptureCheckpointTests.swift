import Testing
@testable import ReplicationCore

/// A scripted replication stream and Kafka acknowledgements for ``CaptureCheckpoint``, with an
/// oracle written from the rule's words: a transaction may be confirmed once it committed and
/// all its events are acknowledged, a keepalive's position once everything before it may be;
/// only a prefix of the stream in order. After every step the confirmed position must never
/// pass a transaction that is not done (the server would then never send it again).
struct CheckpointWorld {
    enum Step: Hashable, CustomStringConvertible {
        case begin(tx: Int)
        case produce(event: Int)
        case commit(tx: Int)
        case keepalive(LSN)
        case ack(event: Int)

        var description: String {
            switch self {
            case .begin(let t): "B\(t)"
            case .produce(let e): "P\(e)"
            case .commit(let t): "C\(t)"
            case .keepalive(let l): "K\(l)"
            case .ack(let e): "A\(e)"
            }
        }
    }

    struct Transaction {
        /// The commit record's start (Begin's final LSN) and end (Commit's end LSN).
        var final: LSN
        var end: LSN
        var events: [Int]
    }

    let transactions: [Transaction]
    var checkpoint = CaptureCheckpoint(start: LSN(0x100))
    var tokens: [Int: UInt64] = [:]
    var acked: Set<Int> = []
    var committed: Set<Int> = []
    /// What the stream delivered so far, in order: a transaction or a keepalive outside one.
    var received: [(tx: Int?, lsn: LSN)] = []
    var inTransaction = false
    var trace: [Step] = []

    init(_ transactions: [Transaction]) { self.transactions = transactions }

    mutating func apply(_ step: Step) throws {
        trace.append(step)
        switch step {
        case .begin(let t):
            try checkpoint.begin()
            received.append((t, transactions[t].end))
            inTransaction = true
        case .produce(let e): tokens[e] = try checkpoint.produced()
        case .commit(let t):
            try checkpoint.commit(end: transactions[t].end)
            committed.insert(t)
            inTransaction = false
        case .keepalive(let l):
            checkpoint.keepalive(walEnd: l)
            if !inTransaction { received.append((nil, l)) }
        case .ack(let e):
            let known = checkpoint.acknowledged(tokens[e]!)
            #expect(known, "\(trace)")
            acked.insert(e)
        }
    }

    func done(_ t: Int) -> Bool { committed.contains(t) && transactions[t].events.allSatisfy(acked.contains) }

    /// The oracle: the end of the longest done prefix of what was received.
    var expected: LSN {
        var lsn = LSN(0x100)
        for r in received {
            if let t = r.tx, !done(t) { break }
            lsn = max(lsn, r.lsn)
        }
        return lsn
    }

    func check() {
        for (t, tx) in transactions.enumerated() where !done(t) {
            #expect(checkpoint.confirmed <= tx.final, "confirmed \(checkpoint.confirmed) passes transaction \(t) (commit at \(tx.final)), not done, after \(trace)")
        }
        #expect(checkpoint.confirmed == expected, "confirmed \(checkpoint.confirmed), expected \(expected) after \(trace)")
        #expect(checkpoint.unacknowledged == tokens.count - acked.count)
    }
}

@Suite("CaptureCheckpoint")
struct CaptureCheckpointTests {
    typealias W = CheckpointWorld

    /// T0: two events, with a keepalive inside it whose WAL end lies past T0's commit; T1: an
    /// echo of the applier (no event); a keepalive; T2: one event; a last keepalive.
    static let transactions = [
        W.Transaction(final: LSN(0x1F0), end: LSN(0x200), events: [0, 1]),
        W.Transaction(final: LSN(0x2F0), end: LSN(0x300), events: []),
        W.Transaction(final: LSN(0x4F0), end: LSN(0x500), events: [2]),
    ]
    static let stream: [W.Step] = [
        .begin(tx: 0), .produce(event: 0), .keepalive(LSN(0x250)), .produce(event: 1), .commit(tx: 0),
        .begin(tx: 1), .commit(tx: 1), .keepalive(LSN(0x400)),
        .begin(tx: 2), .produce(event: 2), .commit(tx: 2), .keepalive(LSN(0x600)),
    ]

    /// Runs every interleaving of the stream (in its order) with the acknowledgements (each
    /// after its event was produced, in any order among themselves), checking after each step.
    static func explore(_ world: W, next: Int, produced: [Int], count: inout Int) throws {
        world.check()
        var candidates: [W.Step] = produced.filter { !world.acked.contains($0) }.map { .ack(event: $0) }
        if next < stream.count { candidates.append(stream[next]) }
        if candidates.isEmpty {
            count += 1
            #expect(world.checkpoint.confirmed == LSN(0x600), "everything acknowledged: \(world.trace)")
            return
        }
        for step in candidates {
            var w = world
            try w.apply(step)
            var p = produced
            if case .produce(let e) = step { p.append(e) }
            let isStreamStep = next < stream.count && step == stream[next]
            try explore(w, next: isStreamStep ? next + 1 : next, produced: p, count: &count)
        }
    }

    @Test("every interleaving of stream and acknowledgements: never past an unacknowledged event, keepalives when idle")
    func everyInterleaving() throws {
        var count = 0
        try Self.explore(W(Self.transactions), next: 0, produced: [], count: &count)
        // 12 stream steps and 3 acknowledgements, each after its event: 390 orders.
        #expect(count == 390, "interleavings explored: \(count)")
    }

    @Test("random long streams against the oracle")
    func randomStreams() throws {
        var rng = SplitMix(seed: 7)
        for _ in 0..<300 {
            // Transactions with 0–3 events at growing LSNs, keepalives between and inside them.
            var txs: [W.Transaction] = []
            var steps: [W.Step] = []
            var lsn: UInt64 = 0x1000
            var event = 0
            for t in 0..<Int(rng.next() % 12) {
                let n = Int(rng.next() % 4)
                lsn += 0x10 + rng.next() % 0x100
                txs.append(W.Transaction(final: LSN(lsn), end: LSN(lsn + 0x8), events: Array(event..<(event + n))))
                lsn += 0x8
                steps.append(.begin(tx: t))
                for e in event..<(event + n) {
                    steps.append(.produce(event: e))
                    if rng.next() % 5 == 0 { steps.append(.keepalive(LSN(lsn + rng.next() % 0x400))) }
                }
                event += n
                steps.append(.commit(tx: t))
                if rng.next() % 3 == 0 { steps.append(.keepalive(LSN(lsn + rng.next() % 0x10))) }
            }
            var world = W(txs)
            var pendingAcks: [Int] = []
            for step in steps {
                try world.apply(step)
                if case .produce(let e) = step { pendingAcks.append(e) }
                while !pendingAcks.isEmpty && rng.next() % 2 == 0 {
                    try world.apply(.ack(event: pendingAcks.remove(at: Int(rng.next() % UInt64(pendingAcks.count)))))
                }
                world.check()
            }
            while !pendingAcks.isEmpty {
                try world.apply(.ack(event: pendingAcks.remove(at: Int(rng.next() % UInt64(pendingAcks.count)))))
                world.check()
            }
            #expect(world.checkpoint.unacknowledged == 0)
        }
    }

    @Test("an idle stream confirms each keepalive's WAL end at once, never backwards")
    func idleKeepalives() {
        var c = CaptureCheckpoint(start: LSN(0x500))
        c.keepalive(walEnd: LSN(0x400))
        #expect(c.confirmed == LSN(0x500))
        c.keepalive(walEnd: LSN(0x900))
        #expect(c.confirmed == LSN(0x900))
        c.keepalive(walEnd: LSN(0x900))
        #expect(c.confirmed == LSN(0x900))
    }

    @Test("keepalives behind an unacknowledged event wait for it, then all move at once")
    func keepalivesWaitBehindAnEvent() throws {
        var c = CaptureCheckpoint(start: LSN(0x100))
        try c.begin()
        let token = try c.produced()
        try c.commit(end: LSN(0x200))
        c.keepalive(walEnd: LSN(0x300))
        c.keepalive(walEnd: LSN(0x700))
        #expect(c.confirmed == LSN(0x100) && c.unacknowledged == 1)
        c.acknowledged(token)
        #expect(c.confirmed == LSN(0x700) && c.unacknowledged == 0)
    }

    @Test("unknown and repeated acknowledgements change nothing; tokens continue across checkpoints")
    func unknownAcknowledgements() throws {
        var c = CaptureCheckpoint(start: LSN(0x100), firstToken: 41)
        try c.begin()
        let a = try c.produced(), b = try c.produced()
        #expect(a == 41 && b == 42 && c.nextToken == 43)
        try c.commit(end: LSN(0x200))
        let stale = c.acknowledged(40)  // an event of an earlier stream
        let first = c.acknowledged(b), again = c.acknowledged(b)
        #expect(!stale && first && !again)
        #expect(c.confirmed == LSN(0x100))
        let last = c.acknowledged(a)
        #expect(last)
        #expect(c.confirmed == LSN(0x200))
        let later = CaptureCheckpoint(start: c.confirmed, firstToken: c.nextToken)
        #expect(later.nextToken == 43 && later.confirmed == LSN(0x200))
    }

    @Test("a stream out of order is an error, not a confirmation")
    func streamOrder() throws {
        var c = CaptureCheckpoint(start: LSN(0x100))
        #expect(throws: CaptureCheckpoint.StreamOrderError.self) { try c.commit(end: LSN(0x200)) }
        #expect(throws: CaptureCheckpoint.StreamOrderError.self) { _ = try c.produced() }
        try c.begin()
        #expect(throws: CaptureCheckpoint.StreamOrderError.self) { try c.begin() }
        #expect(c.confirmed == LSN(0x100))
    }
}
