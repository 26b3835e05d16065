import Metrics
public import Prometheus
import ReplicationCore

/// The process-wide metrics backend: swift-metrics → swift-prometheus, bootstrapped once.
///
/// `MetricsSystem.bootstrap` may run only once per process, so the registry is a lazily
/// initialised static: the first call to ``bootstrap()`` installs the factory, every later call
/// (another test, a second command) returns the same registry.
public enum MetricsSetup {
    /// Histogram buckets of both duration histograms: 1 ms to 60 s, roughly 1–2.5–5 per decade.
    public static let durationBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
    ]

    /// `# HELP` text for every metric of docs/metrics.md (promtool's linter wants one per family).
    static let help: [String: String] = [
        MetricName.lagEvents: "Events produced but not yet applied to the region: sum over partitions of max(0, high watermark - next offset).",
        MetricName.partitionLagEvents: "Events produced but not yet applied to the region, per partition: max(0, high watermark - next offset).",
        MetricName.expiredEvents: "Records deleted by Kafka retention before the region applied them: sum over partitions of max(0, low watermark - next offset). They can never be applied.",
        MetricName.lagSeconds: "Age in seconds of the oldest event produced but not yet applied to the region; 0 when caught up.",
        MetricName.replicatedThrough: "Unix time T such that every event with a Kafka timestamp <= T is applied in the region (now - lag_seconds).",
        MetricName.applyLatency: "Seconds from an event's Kafka record timestamp to the commit that applied it in the region.",
        MetricName.eventsTotal: "Events processed for the region, by outcome (applied, duplicate, stale, skipped_origin, dead_lettered).",
        MetricName.batchDuration: "Seconds taken by one apply transaction in the region.",
        MetricName.regionUp: "1 when the region's database accepts writes and its pipeline runs, else 0.",
        MetricName.lastApply: "Unix time of the region's last committed batch (0: none since start).",
        MetricName.lagSampleTimestamp: "Unix time the high watermarks behind the region's lag figures were last read (0: never).",
        MetricName.applyRetries: "Transient apply failures retried for the region.",
        MetricName.schemaCompatible: "1 when the schema version recorded in the region's replicator_schema is one this release runs against, 0 when the region is refused for it.",
        MetricName.buildInfo: "Always 1; the version label is the running region-replicator version.",
        MetricName.divergentRows: "Rows and tombstones of the region that differ from the other regions and persisted after every region applied the events in flight (continuous verification; sum of the latest result of every slice).",
        MetricName.verifyLastFullPass: "Unix time continuous verification last finished a full pass over the key space (0: none yet).",
        MetricName.captureEvents: "Events of the region's own writes, by outcome: captured (handed to the capture producer), published (acknowledged by Kafka), unpublishable (a change of the messages table no event can carry).",
        MetricName.captureEchoTransactions: "Transactions of the region's slot written by the applier (its replication origin) and therefore not published again.",
        MetricName.captureLag: "Seconds from the commit of a region's own write to Kafka's acknowledgement of its event.",
        MetricName.captureUp: "1 while this instance streams the region's replication slot, else 0 (another instance may stream it).",
        MetricName.captureRetainedWAL: "WAL bytes the region's capture slot holds on the server: pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn); 0 when not read or invalidated.",
        MetricName.captureWALStatus: "wal_status of the region's capture slot: 0 unknown, 1 reserved, 2 extended, 3 unreserved, 4 lost (invalidated), 5 missing (no such slot).",
        MetricName.captureSlotActive: "1 when a walsender (of any instance) streams the region's capture slot, else 0.",
        MetricName.captureLastAcknowledgedCommit: "Commit time (unix) of the newest transaction of the region with an event acknowledged by Kafka (0: none since start).",
        MetricName.verifySlices: "Slices of the key space verified by continuous verification, by result (consistent, divergent, failed).",
    ]

    private static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = durationBuckets
        MetricsSystem.bootstrap(DescribedMetricsFactory(base: factory, help: help))
        Gauge(label: MetricName.buildInfo, dimensions: [("version", replicatorVersion)]).record(1)
        return registry
    }()

    /// Installs the Prometheus backend for swift-metrics (once per process) and returns its
    /// registry, which `GET /metrics` renders.
    ///
    /// - Important: Call it before creating any metric (`RegionMetrics`): handles made before
    ///   the bootstrap go to swift-metrics' no-op backend for good.
    @discardableResult
    public static func bootstrap() -> PrometheusCollectorRegistry { registry }
}

/// `PrometheusMetricsFactory` with `# HELP` text per metric name.
///
/// swift-prometheus' factory registers every family with an empty help text, and a registry
/// family's help cannot change afterwards; so the handles are made here through the registry's
/// descriptor API, with the text of ``MetricsSetup/help``. Destruction is the base factory's.
struct DescribedMetricsFactory: MetricsFactory {
    let base: PrometheusMetricsFactory
    let help: [String: String]

    private var registry: PrometheusCollectorRegistry { base.registry }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: help[label] ?? label.replacingOccurrences(of: "_", with: " "))
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        let buckets = base.valueHistogramBuckets[label] ?? base.defaultValueHistogramBuckets
        return registry.makeValueHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        let buckets = base.durationHistogramBuckets[label] ?? base.defaultDurationHistogramBuckets
        return registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: buckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { base.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { base.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { base.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { base.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { base.destroyTimer(handler) }
}
