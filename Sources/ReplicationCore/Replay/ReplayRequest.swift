import Foundation
public import KafkaClient

// The inputs and outputs of a replay (``ReplayJob``).

/// One end of a replay range.
public enum ReplayBound: Sendable, Hashable {
    /// A Kafka offset (applies to every selected partition).
    case offset(Int64)
    /// A Kafka record timestamp.
    case time(Timestamp)
}

/// What to replay, where, and how.
///
/// Ranges are **half-open** per partition: `from` is inclusive, `to` is exclusive
/// (`--from-offset 100 --to-offset 200` replays offsets 100…199; `--from-time A --to-time B`
/// replays records with A ≤ timestamp < B), so consecutive ranges tile without overlap. Without
/// `to`, a replay ends at each partition's high watermark as read when the job starts; records
/// produced later are the daemon's business.
public struct ReplayRequest: Sendable {
    public var region: String
    /// libpq conninfo (may hold a password; never printed).
    public var conninfo: String
    public var kafka: KafkaConfiguration
    public var topic: String
    public var table: TableName
    /// Event field → column of ``table``.
    public var columns: MessageColumns = .standard
    /// The apply connection's timeouts (`apply.statement_timeout_ms`).
    public var timeouts = ApplyTimeouts()
    public var applyToOrigin: Bool
    /// Mark the replay's writes with one of the applier's replication origins (the region
    /// captures its own writes: capture must not publish the replayed rows again).
    public var markApplierOrigin = false
    public var maxBatchEvents: Int
    public var from: ReplayBound
    public var to: ReplayBound?
    /// Only this partition (nil: every partition of the topic).
    public var partition: Int32?
    /// Read and classify, write nothing to the region's tables.
    public var dryRun: Bool

    public init(region: String, conninfo: String, kafka: KafkaConfiguration, topic: String, table: TableName,
                applyToOrigin: Bool, maxBatchEvents: Int, from: ReplayBound, to: ReplayBound?, partition: Int32?,
                dryRun: Bool) {
        self.region = region
        self.conninfo = conninfo
        self.kafka = kafka
        self.topic = topic
        self.table = table
        self.applyToOrigin = applyToOrigin
        self.maxBatchEvents = maxBatchEvents
        self.from = from
        self.to = to
        self.partition = partition
        self.dryRun = dryRun
    }
}

/// The offsets one partition's replay covers, resolved at start.
public struct ReplayPartitionRange: Sendable, Hashable {
    public var partition: Int32
    /// First offset read (inclusive).
    public var start: Int64
    /// First offset not read (exclusive).
    public var end: Int64
    /// Records with a timestamp below this (ms) are skipped: the `--from-time` fallback.
    public var skipBeforeMs: Int64?
    /// Records with a timestamp at or above this (ms) are skipped: the `--to-time` fallback.
    public var skipFromMs: Int64?

    public var count: Int64 { max(0, end.saturatingSubtracting(start)) }
}

/// A progress report (on the replay thread: keep the callback short).
public struct ReplayProgress: Sendable {
    /// `scan` (the first pass of a dry run) or `apply`.
    public var phase: String
    /// Offsets consumed so far in this phase (records skipped by timestamp included).
    public var done: Int64
    /// Offsets the phase will consume.
    public var total: Int64
    /// Offsets per second over the phase so far.
    public var rate: Double
    public var counts: OutcomeCounts
}

/// What a replay did.
public struct ReplaySummary: Sendable {
    public var region: String
    public var dryRun: Bool
    /// Records handed to the apply path (inside the range, after any timestamp filter).
    public var read = 0
    /// Records read but outside the time bounds (the offsets-for-times fallback only).
    public var skippedByTimestamp = 0
    public var counts = OutcomeCounts()
    public var partitions: [ReplayPartitionRange] = []
    /// Partitions whose time bound the broker could not resolve (read from the start and filtered by timestamp).
    public var fallbackPartitions: [Int32] = []
    /// Ctrl-C: the summary covers what was applied before the stop.
    public var interrupted = false
    /// Human-readable remarks (retention gaps, fallbacks).
    public var notes: [String] = []
}

/// Why a replay could not run.
public struct ReplayError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable { case usage, kafkaUnavailable, regionUnavailable, failed, schemaVersion }
    public var kind: Kind
    public var description: String

    public init(_ kind: Kind, _ description: String) {
        self.kind = kind
        self.description = description
    }
}
