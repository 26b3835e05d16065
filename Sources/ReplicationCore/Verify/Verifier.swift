import Foundation
import PostgresClient

/// Compares the regions' messages and tombstones with checksums computed inside each region's
/// Postgres over key-range segments, bisecting only the segments that differ, and fetching
/// only the items of small differing segments.
///
/// Each pass reads every region in one `REPEATABLE READ READ ONLY` transaction (a consistent
/// snapshot; no lock that blocks the applier or the application). With a rate limit
/// (``VerifyOptions/pace``), each level of the bisection is a transaction of its own and the
/// rate limit sleeps between them: no snapshot is held while sleeping. Regions are queried in
/// parallel, one thread each (``RegionFanOut``). The passes are in `Verifier+Passes.swift`, the
/// repair in `Verifier+Repair.swift`.
///
/// - Important: Blocking (libpq). Run on a dedicated thread.
public final class Verifier: @unchecked Sendable {
    // @unchecked Sendable: used by one thread at a time; the per-region threads it starts each
    // touch only their own connection.
    public let targets: [VerifyTarget]
    public let options: VerifyOptions
    let regionDatabases: RegionFanOut

    public init(targets: [VerifyTarget], options: VerifyOptions, applicationName: String = "region-replicator verify") {
        self.targets = targets
        self.options = options
        regionDatabases = RegionFanOut(targets: targets, applicationName: applicationName)
    }

    deinit { close() }

    public func close() { regionDatabases.close() }

    var regions: [String] { regionDatabases.regions }

    /// Connects to every region (or re-connects those lost) and checks the tables exist.
    public func connect() throws(VerifyError) {
        try regionDatabases.connect(table: options.schema.table)
    }

    // MARK: - The whole verification

    /// What a verification found, after the second pass.
    public struct Outcome: Sendable {
        /// The divergences that persisted (and the winners, for a repair).
        public var pass: VerifyPass
        /// Divergences the first pass found (in flight or not).
        public var candidates: Int
        /// Regions that had not applied, within the settle timeout, everything the topic held
        /// when the first pass ended: why (their divergences may still be in flight).
        public var lagging: [String: String] = [:]
        public var startedAt: Timestamp
        public var seconds: Double
    }

    /// First pass, then — only when it found candidates — a wait until every region's stored
    /// offsets reach the topic's high watermarks as read just after the first pass (so every
    /// event published before it ended, the versions it saw included, is applied everywhere),
    /// then the second pass over the candidates (``Classifier``'s `persisting(first:second:)`
    /// says which are real).
    ///
    /// - Parameters:
    ///   - watermarks: the topic's high watermarks now (called once, after the first pass, when
    ///     it found candidates), or why they cannot be read.
    ///   - cancelled: polled while waiting.
    public func run(watermarks: () -> Result<[Int32: Int64], VerifyError>,
                    cancelled: () -> Bool = { false }) throws(VerifyError) -> Outcome {
        let started = ContinuousClock.now
        let startedAt = Timestamp.now
        try connect()
        let first = try compare()
        func finish(_ pass: VerifyPass, lagging: [String: String]) -> Outcome {
            Outcome(pass: pass, candidates: first.divergences.count, lagging: lagging, startedAt: startedAt,
                    seconds: (ContinuousClock.now - started).seconds)
        }
        guard !first.divergences.isEmpty else { return finish(first, lagging: [:]) }
        let high: [Int32: Int64]
        switch watermarks() {
        case .success(let h): high = h
        case .failure(let e):
            throw VerifyError(e.kind, "the first pass found \(first.divergences.count) candidate divergences, which cannot be confirmed: \(e.description)")
        }
        let lagging = try waitApplied(high, cancelled: cancelled)
        return finish(try recheck(first), lagging: lagging)
    }

    /// Waits (at most `options.settleTimeout`) until every region's stored offsets reach `high`;
    /// returns the regions that did not, with their remaining lag.
    private func waitApplied(_ high: [Int32: Int64], cancelled: () -> Bool) throws(VerifyError) -> [String: String] {
        let deadline = ContinuousClock.now.advanced(by: options.settleTimeout)
        let topic = options.topic
        let groups = targets.map(\.consumerGroup)
        let tables = regionDatabases.bookkeeping.map(\.offsets)
        while true {
            let stored = try regionDatabases.eachConnected { i, c throws(PostgresError) in
                try RegionApplier.storedOffsets(group: groups[i], topic: topic, table: tables[i], on: c)
            }
            var lagging: [String: String] = [:]
            for (i, s) in stored.enumerated() {
                // Broker watermarks and offsets stored in the databases: saturating, never trapping.
                let behind = high.reduce(Int64(0)) { $0.saturatingAdding(max(0, $1.value.saturatingSubtracting(s[$1.key] ?? 0))) }
                if behind > 0 { lagging[regions[i]] = "\(behind) events behind the topic as it was after the first pass" }
            }
            if lagging.isEmpty || ContinuousClock.now >= deadline || cancelled() { return lagging }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }
}
