/// What a region's pipeline does after one apply attempt. Pure, as ``PartitionBookkeeping`` is
/// for offsets: the result of an attempt goes in (``Attempt``), one ``Decision`` comes out, and
/// `RegionPipeline` performs it (the database, the consumer, the logs). Its state is what those
/// decisions depend on: how many records one transaction takes now, and the two backoffs.
///
/// By the failure's class (``ApplyFailure``): transient failures and a schema that does not fit
/// wait with backoff and retry the same records; a batch too big or too slow is halved at once,
/// and grows back after clean transactions; a single record the region cannot take even alone
/// becomes a dead letter only when its own content is the reason (too big, ``ApplyFailure/split``)
/// — a single record cut short (``ApplyFailure/slow``: a statement timeout, a cancel) waits and
/// is retried like a transient failure; moved stored offsets are followed.
public struct ApplyPolicy: Sendable {
    /// How an apply attempt ended.
    public enum Attempt: Sendable, Hashable {
        /// A transaction of `records` records committed.
        case committed(records: Int)
        /// A transaction of `records` records failed with a failure of this class (nothing committed).
        case failed(ApplyFailure, records: Int)
        /// Writing the single record of a ``Decision/deadLetter`` decision as a dead letter failed too.
        case deadLetterFailed(ApplyFailure)
    }

    /// A wait before the same records are tried again.
    public struct Retry: Sendable, Hashable {
        /// How long to wait (partitions paused, the consumer served meanwhile).
        public var delay: Duration
        /// The attempt this retry follows (1 for the first failure since the last commit).
        public var attempt: Int
        /// The region's schema does not fit: the region stops until it is fixed and retries slowly.
        public var schema: Bool
    }

    /// What the pipeline does next.
    public enum Decision: Sendable, Hashable {
        /// Carry on with the next records. `recoveredAfter`: the failed attempts (that waited)
        /// before this commit, when there were any (the region recovered).
        case next(recoveredAfter: Int?)
        /// Try the same records again at once, at most ``ApplyPolicy/chunkLimit`` (now `chunkLimit`) per transaction.
        case split(chunkLimit: Int)
        /// The single record cannot be applied even alone, for a reason of its own content:
        /// write it as a dead letter (with the next offsets), then carry on. When that fails,
        /// report ``Attempt/deadLetterFailed(_:)``.
        case deadLetter
        /// Re-read the region's stored offsets and continue from them.
        case followStoredOffsets
        /// Wait, then try the same records again.
        case backOff(Retry)
    }

    /// Most records per transaction (`apply.max_batch_events`).
    public let maxChunk: Int
    /// Most records per transaction now: ``maxChunk``, halved while batches are too big or
    /// too slow for the region, doubled back after ``cleanChunksToGrow`` clean ones.
    public private(set) var chunkLimit: Int
    private var cleanChunks = 0
    private var backoff = Backoff()
    private var schemaBackoff = ApplyPolicy.schemaBackoff()

    /// Transactions that must commit at a reduced ``chunkLimit`` before it doubles.
    public static let cleanChunksToGrow = 8

    /// Retry delays while the region's schema is not what the daemon needs.
    public static func schemaBackoff() -> Backoff { Backoff(initial: .seconds(5), maximum: .seconds(60)) }

    public init(maxChunk: Int) {
        self.maxChunk = max(1, maxChunk)
        self.chunkLimit = self.maxChunk
    }

    /// A new round of applying what is pending begins: retries count from the start again
    /// (the chunk limit carries over).
    public mutating func startApplying() {
        backoff = Backoff()
        schemaBackoff = Self.schemaBackoff()
    }

    /// Decides what follows `attempt`.
    public mutating func after(_ attempt: Attempt) -> Decision {
        switch attempt {
        case .committed:
            let failed = backoff.attempt + schemaBackoff.attempt
            if failed > 0 { startApplying() }
            if chunkLimit < maxChunk {
                cleanChunks += 1
                if cleanChunks >= Self.cleanChunksToGrow {
                    chunkLimit = min(maxChunk, chunkLimit * 2)
                    cleanChunks = 0
                }
            }
            return .next(recoveredAfter: failed > 0 ? failed : nil)
        case .failed(.offsetsMoved, _), .deadLetterFailed(.offsetsMoved):
            return .followStoredOffsets
        case .failed(.split, let records) where records > 1, .failed(.slow, let records) where records > 1:
            chunkLimit = max(1, records / 2)
            cleanChunks = 0
            return .split(chunkLimit: chunkLimit)
        case .failed(.split, _):
            return .deadLetter
        case .failed(.schema, _):
            let delay = schemaBackoff.next()
            return .backOff(Retry(delay: delay, attempt: schemaBackoff.attempt, schema: true))
        case .failed(.transient, _), .failed(.slow, _), .failed(.deadLetter, _), .deadLetterFailed:
            let delay = backoff.next()
            return .backOff(Retry(delay: delay, attempt: backoff.attempt, schema: false))
        }
    }
}
