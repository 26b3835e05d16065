import Foundation
public import Logging
import Metrics
public import ServiceLifecycle
import Synchronization

/// How the daemon's continuous verification runs (the `verify` section; off by default).
public struct AntiEntropySettings: Sendable, Hashable {
    /// Time between two slices.
    public var interval: Duration
    /// The key space is verified in this many slices, one per interval: a full pass takes
    /// `slices × interval`.
    public var slices: Int
    /// At most this many items (rows + tombstones, summed over regions) checksummed per second.
    public var maxItemsPerSecond: Int
    /// How long a slice's candidates wait for every region to apply what was in flight.
    public var settleTimeout: Duration

    public init(interval: Duration = .seconds(600), slices: Int = 64, maxItemsPerSecond: Int = 200_000,
                settleTimeout: Duration = .seconds(60)) {
        self.interval = interval
        self.slices = slices
        self.maxItemsPerSecond = maxItemsPerSecond
        self.settleTimeout = settleTimeout
    }
}

/// The metric names of continuous verification.
extension MetricName {
    public static let divergentRows = "region_replicator_divergent_rows"
    public static let verifyLastFullPass = "region_replicator_verify_last_full_pass_timestamp_seconds"
    public static let verifySlices = "region_replicator_verify_slices_total"
}

/// Continuous anti-entropy: every `interval`, verifies one slice of the key space across every
/// region (the same ``Verifier`` as `region-replicator verify`, rate-limited), and exports what
/// persisted: `region_replicator_divergent_rows{region}` (summed over the latest result of every
/// slice) and the time of the last full pass. It only reports; `verify --repair` repairs.
///
/// Candidates are re-checked once every region's stored offsets reach the high watermarks the
/// lag monitors sampled after the slice's first pass, so events in flight raise no alarm.
public final class AntiEntropy: Service, @unchecked Sendable {
    // @unchecked Sendable: mutable state is confined to the loop's thread; `stop` is atomic.
    private let targets: [VerifyTarget]
    private let schema: VerifySchema
    private let topic: String
    private let settings: AntiEntropySettings
    private let status: ReplicationStatus
    private let logger: Logger
    private let stopRequested = Atomic<Bool>(false)
    private let divergent: [String: Gauge]
    private let lastFullPass: Gauge
    private let slicesDone: [String: Counter]

    public init(targets: [VerifyTarget], schema: VerifySchema, topic: String, settings: AntiEntropySettings,
                status: ReplicationStatus, logger: Logger) {
        self.targets = targets
        self.schema = schema
        self.topic = topic
        self.settings = settings
        self.status = status
        var logger = logger
        logger[metadataKey: "loop"] = "anti-entropy"
        self.logger = logger
        divergent = Dictionary(uniqueKeysWithValues: targets.map { ($0.region, Gauge(label: MetricName.divergentRows, dimensions: [("region", $0.region)])) })
        lastFullPass = Gauge(label: MetricName.verifyLastFullPass)
        slicesDone = Dictionary(uniqueKeysWithValues: ["consistent", "divergent", "failed"].map {
            ($0, Counter(label: MetricName.verifySlices, dimensions: [("result", $0)]))
        })
        for g in divergent.values { g.record(0) }
        lastFullPass.record(0)
        for c in slicesDone.values { c.increment(by: 0) }
    }

    public func run() async throws {
        await withGracefulShutdownAndCancellation(onStop: { self.stopRequested.store(true, ordering: .relaxed) }) {
            await BlockingThread.run(name: "anti-entropy") { self.loop() }
        }
    }

    private var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    /// Sleeps until `deadline` or a stop; false when stopping.
    private func sleep(until deadline: ContinuousClock.Instant) -> Bool {
        while ContinuousClock.now < deadline {
            if stopping { return false }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return !stopping
    }

    private func loop() {
        var perSlice = Array(repeating: [String: Int](), count: settings.slices)
        var slice = 0
        var next = ContinuousClock.now.advanced(by: settings.interval)
        logger.info("continuous verification on", metadata: [
            "slices": "\(settings.slices)", "interval_seconds": "\(settings.interval.components.seconds)"])
        while sleep(until: next) {
            next = ContinuousClock.now.advanced(by: settings.interval)
            let started = ContinuousClock.now
            do throws(VerifyError) {
                let outcome = try verify(slice: slice)
                var counts: [String: Int] = [:]
                for d in outcome.pass.divergences { counts[d.region, default: 0] += 1 }
                perSlice[slice] = counts
                for (region, gauge) in divergent { gauge.record(Double(perSlice.reduce(0) { $0 + ($1[region] ?? 0) })) }
                slicesDone[outcome.pass.divergences.isEmpty ? "consistent" : "divergent"]?.increment()
                if !outcome.pass.divergences.isEmpty {
                    logger.warning("regions diverge: run `region-replicator verify` for the details, `verify --repair` to converge", metadata: [
                        "slice": "\(slice)/\(settings.slices)", "divergent": "\(outcome.pass.divergences.count)",
                        "by_region": "\(counts.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","))",
                        "sample": "\(outcome.pass.divergences.prefix(5).map { "\($0.region) \($0.kind.rawValue) \($0.messageID ?? $0.sessionID)" }.joined(separator: "; "))",
                        "lagging": "\(outcome.lagging.keys.sorted().joined(separator: ","))"])
                } else {
                    logger.debug("slice verified", metadata: ["slice": "\(slice)/\(settings.slices)",
                                                              "seconds": "\((ContinuousClock.now - started).seconds)"])
                }
                if slice == settings.slices - 1 { lastFullPass.record(Date().timeIntervalSince1970) }
                slice = (slice + 1) % settings.slices
            } catch {
                // Retried at the next interval (a region down is the lag alerts' business).
                slicesDone["failed"]?.increment()
                logger.warning("continuous verification failed; retrying at the next interval", metadata: [
                    "slice": "\(slice)/\(settings.slices)", "error": "\(error)"])
            }
        }
    }

    private func verify(slice: Int) throws(VerifyError) -> Verifier.Outcome {
        var options = VerifyOptions(schema: schema, topic: topic)
        options.range = .slice(slice, of: settings.slices)
        options.settleTimeout = settings.settleTimeout
        options.firstFanout = 256
        let limit = Double(max(1, settings.maxItemsPerSecond))
        options.pace = { [weak self] items in
            // `items` sums counts the regions' databases reported: at most a day's pause, whatever they say.
            let ms = min(Double(max(0, items)) / limit * 1000, 86_400_000)
            let until = ContinuousClock.now.advanced(by: .milliseconds(Int64(ms)))
            _ = self?.sleep(until: until)
        }
        let verifier = Verifier(targets: targets, options: options, applicationName: "region-replicator anti-entropy")
        defer { verifier.close() }
        return try verifier.run(watermarks: { self.watermarks(after: Date().timeIntervalSince1970) }, cancelled: { self.stopping })
    }

    /// High watermarks the lag monitors sampled after `t` (the topic as it was when the slice's
    /// first pass ended, or later), waiting a few seconds for a fresh sample.
    private func watermarks(after t: Double) -> Result<[Int32: Int64], VerifyError> {
        let deadline = ContinuousClock.now.advanced(by: .seconds(10))
        while !stopping {
            let snapshot = status.snapshot()
            let fresh = snapshot.regions.filter { ($0.sampledAt ?? 0) >= t && !$0.partitions.isEmpty }
            if let r = fresh.first {
                return .success(Dictionary(uniqueKeysWithValues: r.partitions.map { ($0.partition, $0.highWatermark) }))
            }
            if ContinuousClock.now >= deadline { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        return .failure(VerifyError(.regionUnavailable, "no fresh high watermarks from Kafka: candidates cannot be re-checked"))
    }
}
