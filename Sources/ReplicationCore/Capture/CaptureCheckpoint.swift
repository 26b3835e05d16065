/// Which position of a region's replication slot may be confirmed as flushed: the pure
/// bookkeeping of capture (no I/O), driven by what the replication stream delivered and by
/// Kafka's acknowledgements.
///
/// The stream delivers whole transactions in commit order (`begin`, the events produced for
/// its changes, `commit` with the end of its commit record) and, between them, keepalives
/// carrying the server's WAL end. Kafka acknowledges events in any order (partitions are
/// independent). A transaction is *done* once it committed and every event produced for it is
/// acknowledged; one that produced none — an echo of the applier's own writes, filtered out, or
/// one without a change to publish — is done at its commit. A keepalive's position is done at
/// once. ``confirmed`` is the end of the longest prefix of the stream that is done:
///
/// - it never passes a transaction with an event not acknowledged yet, so a crash at any
///   point makes the server send every such transaction again (at least once);
/// - while nothing is published (an idle database, or one busy only with other tables or
///   with the applier's echoes), the keepalives' WAL end moves it, so the slot never holds
///   WAL for nothing.
///
/// A keepalive received inside a transaction (between its `begin` and `commit`) is ignored:
/// its position could lie past that transaction's commit.
public struct CaptureCheckpoint: Sendable {
    /// The position that may be confirmed as flushed (never decreases).
    public private(set) var confirmed: LSN
    /// The token the next produced event gets; a later checkpoint (after a reconnect) starts
    /// here, so a late acknowledgement of an event of an earlier stream is never mistaken.
    public private(set) var nextToken: UInt64

    private enum Entry: Sendable {
        /// `end` is nil until the commit arrives.
        case transaction(outstanding: Int, end: LSN?)
        case position(LSN)
    }

    /// The stream's entries not done yet, by sequence number: `first..<next`, oldest first.
    private var entries: [UInt64: Entry] = [:]
    private var first: UInt64 = 0
    private var next: UInt64 = 0
    /// The sequence number of the open transaction (received `begin`, no `commit` yet).
    private var open: UInt64?
    /// The transaction (sequence number) of every event not acknowledged yet.
    private var owner: [UInt64: UInt64] = [:]

    /// - Parameters:
    ///   - start: the slot's confirmed position when streaming started.
    ///   - firstToken: the first event token (continue from a previous checkpoint's ``nextToken``).
    public init(start: LSN, firstToken: UInt64 = 1) {
        confirmed = start
        nextToken = firstToken
    }

    /// Events produced and not acknowledged yet.
    public var unacknowledged: Int { owner.count }

    /// Whether the event with `token` was produced by this checkpoint's stream and is not acknowledged yet.
    public func isOutstanding(_ token: UInt64) -> Bool { owner[token] != nil }

    /// Whether a transaction is open (its `begin` received, not its `commit`).
    public var inTransaction: Bool { open != nil }

    /// The stream broke the protocol (a `commit` without `begin`, a change outside a transaction…).
    public struct StreamOrderError: Error, Sendable, Hashable, CustomStringConvertible {
        public var description: String
    }

    // MARK: - The stream

    /// A transaction's `begin`.
    public mutating func begin() throws(StreamOrderError) {
        guard open == nil else { throw StreamOrderError(description: "a transaction began before the previous one committed") }
        open = append(.transaction(outstanding: 0, end: nil))
    }

    /// An event produced for a change of the open transaction.
    /// - Returns: its token, to match Kafka's acknowledgement with ``acknowledged(_:)``.
    public mutating func produced() throws(StreamOrderError) -> UInt64 {
        guard let seq = open, case .transaction(let n, nil)? = entries[seq] else {
            throw StreamOrderError(description: "a change arrived outside a transaction")
        }
        entries[seq] = .transaction(outstanding: n + 1, end: nil)
        let token = nextToken
        nextToken += 1
        owner[token] = seq
        return token
    }

    /// The open transaction's `commit`, with the end of its commit record.
    public mutating func commit(end: LSN) throws(StreamOrderError) {
        guard let seq = open, case .transaction(let n, nil)? = entries[seq] else {
            throw StreamOrderError(description: "a commit arrived outside a transaction")
        }
        entries[seq] = .transaction(outstanding: n, end: end)
        open = nil
        advance()
    }

    /// A keepalive (or any message) carrying the server's WAL end: every transaction that
    /// committed before it has been received.
    public mutating func keepalive(walEnd: LSN) {
        guard open == nil, walEnd > confirmed else { return }
        if next > first, case .position(let last)? = entries[next - 1] {
            // Consecutive keepalives: the later position stands for both.
            if walEnd > last { entries[next - 1] = .position(walEnd) }
        } else {
            _ = append(.position(walEnd))
        }
        advance()
    }

    // MARK: - Kafka

    /// Kafka acknowledged the event with `token`.
    /// - Returns: false for a token this checkpoint does not know (already acknowledged, or of
    ///   an earlier stream), which changes nothing.
    @discardableResult
    public mutating func acknowledged(_ token: UInt64) -> Bool {
        guard let seq = owner.removeValue(forKey: token), case .transaction(let n, let end)? = entries[seq] else { return false }
        entries[seq] = .transaction(outstanding: n - 1, end: end)
        advance()
        return true
    }

    // MARK: - Internals

    private mutating func append(_ entry: Entry) -> UInt64 {
        let seq = next
        entries[seq] = entry
        next += 1
        return seq
    }

    /// Moves ``confirmed`` over the done prefix and forgets it.
    private mutating func advance() {
        while first < next, let entry = entries[first] {
            switch entry {
            case .transaction(0, let end?):
                if end > confirmed { confirmed = end }
            case .position(let lsn):
                if lsn > confirmed { confirmed = lsn }
            default:
                return
            }
            entries[first] = nil
            first += 1
        }
    }
}
