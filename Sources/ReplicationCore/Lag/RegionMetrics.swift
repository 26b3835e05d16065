import Foundation
import Metrics
import Synchronization

/// The metrics of docs/metrics.md.
public enum MetricName {
    public static let lagEvents = "region_replicator_lag_events"
    public static let partitionLagEvents = "region_replicator_partition_lag_events"
    public static let lagSeconds = "region_replicator_lag_seconds"
    public static let expiredEvents = "region_replicator_expired_events"
    public static let replicatedThrough = "region_replicator_replicated_through_timestamp_seconds"
    public static let applyLatency = "region_replicator_apply_latency_seconds"
    public static let eventsTotal = "region_replicator_events_total"
    public static let batchDuration = "region_replicator_batch_duration_seconds"
    public static let regionUp = "region_replicator_region_up"
    public static let lastApply = "region_replicator_last_apply_timestamp_seconds"
    public static let lagSampleTimestamp = "region_replicator_lag_sample_timestamp_seconds"
    public static let applyRetries = "region_replicator_apply_retries_total"
    public static let identityChanges = "region_replicator_identity_changes_total"
    public static let buildInfo = "region_replicator_build_info"
}

/// One region's metric handles, created once at start-up so that every series exists (at 0)
/// from the first scrape.
public final class RegionMetrics: Sendable {
    public let region: String
    private let outcomes: [ApplyOutcome: Counter]
    private let applyLatency: Metrics.Timer
    private let batchDuration: Metrics.Timer
    private let regionUp: Gauge
    private let lastApply: Gauge
    private let retries: Counter
    private let identityChanges: Counter
    private let lagEvents: Gauge
    private let lagSeconds: Gauge
    private let expiredEvents: Gauge
    private let replicatedThrough: Gauge
    private let sampleTimestamp: Gauge
    private let partitionGauges = Mutex<[Int32: Gauge]>([:])

    public init(region: String) {
        self.region = region
        let dims = [("region", region)]
        outcomes = Dictionary(uniqueKeysWithValues: ApplyOutcome.allCases.map { o in
            (o, Counter(label: MetricName.eventsTotal, dimensions: dims + [("outcome", o.rawValue)]))
        })
        applyLatency = Metrics.Timer(label: MetricName.applyLatency, dimensions: dims)
        batchDuration = Metrics.Timer(label: MetricName.batchDuration, dimensions: dims)
        regionUp = Gauge(label: MetricName.regionUp, dimensions: dims)
        lastApply = Gauge(label: MetricName.lastApply, dimensions: dims)
        retries = Counter(label: MetricName.applyRetries, dimensions: dims)
        identityChanges = Counter(label: MetricName.identityChanges, dimensions: dims)
        lagEvents = Gauge(label: MetricName.lagEvents, dimensions: dims)
        lagSeconds = Gauge(label: MetricName.lagSeconds, dimensions: dims)
        expiredEvents = Gauge(label: MetricName.expiredEvents, dimensions: dims)
        replicatedThrough = Gauge(label: MetricName.replicatedThrough, dimensions: dims)
        sampleTimestamp = Gauge(label: MetricName.lagSampleTimestamp, dimensions: dims)
        for o in ApplyOutcome.allCases { outcomes[o]!.increment(by: 0) }
        for g in [regionUp, lastApply, lagEvents, lagSeconds, expiredEvents, replicatedThrough, sampleTimestamp] { g.record(0) }
        retries.increment(by: 0)
        identityChanges.increment(by: 0)
    }

    /// Records one committed batch.
    func batchCommitted(_ result: ApplyResult, duration: Duration, committedAtMs: Int64) {
        for (o, n) in result.counts.counts where n > 0 { outcomes[o]?.increment(by: n) }
        if result.identityChanges > 0 { identityChanges.increment(by: result.identityChanges) }
        // A record stamped after the commit (a producer clock ahead, a wrong unit) has no known
        // latency: it is not observed, rather than observed as 0.
        for ts in result.appliedTimestampsMs {
            if let ns = KafkaTimestamp.latencyNanoseconds(ts, committedAtMs: committedAtMs) { applyLatency.recordNanoseconds(ns) }
        }
        batchDuration.recordNanoseconds(duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000)
        lastApply.record(Double(committedAtMs) / 1000)
    }

    func retried() { retries.increment() }

    /// Records the retention deleted before they were applied (`outcome="gone"`).
    func gone(_ count: Int) { if count > 0 { outcomes[.gone]?.increment(by: count) } }

    /// Publishes the lag figures of a snapshot.
    public func publish(_ r: RegionLag) {
        regionUp.record(r.up ? 1 : 0)
        lagEvents.record(Double(r.lagEvents))
        lagSeconds.record(r.lagSeconds)
        expiredEvents.record(Double(r.expiredEvents))
        replicatedThrough.record(r.replicatedThrough)
        if let s = r.sampledAt { sampleTimestamp.record(s) }
        if let l = r.lastApply { lastApply.record(l) }
        partitionGauges.withLock { gauges in
            for p in r.partitions {
                let g = gauges[p.partition] ?? {
                    let g = Gauge(label: MetricName.partitionLagEvents,
                                  dimensions: [("region", region), ("partition", String(p.partition))])
                    gauges[p.partition] = g
                    return g
                }()
                g.record(Double(p.lagEvents))
            }
        }
    }
}
