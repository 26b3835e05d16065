import Foundation
import Metrics

extension MetricName {
    public static let captureEvents = "region_replicator_capture_events_total"
    public static let captureEchoTransactions = "region_replicator_capture_echo_transactions_total"
    public static let captureLag = "region_replicator_capture_lag_seconds"
    public static let captureUp = "region_replicator_capture_up"
    public static let captureRetainedWAL = "region_replicator_capture_slot_retained_wal_bytes"
    public static let captureWALStatus = "region_replicator_capture_slot_wal_status"
    public static let captureSlotActive = "region_replicator_capture_slot_active"
    public static let captureLastAcknowledgedCommit = "region_replicator_capture_last_acknowledged_commit_timestamp_seconds"
}

/// What one region's capture reports: its metric handles (docs/metrics.md, made once so that
/// every series exists from the first scrape) and its entry of the shared ``CaptureStatus``.
/// Called from the capture thread only.
final class CaptureReporter: Sendable {
    let region: String
    let status: CaptureStatus?
    private let captured: Counter
    private let published: Counter
    private let unpublishable: Counter
    private let echoes: Counter
    private let lag: Metrics.Timer
    private let up: Gauge
    private let retained: Gauge
    private let walStatus: Gauge
    private let slotActive: Gauge
    private let lastAcknowledged: Gauge

    init(region: String, status: CaptureStatus?) {
        self.region = region
        self.status = status
        let dims = [("region", region)]
        captured = Counter(label: MetricName.captureEvents, dimensions: dims + [("outcome", "captured")])
        published = Counter(label: MetricName.captureEvents, dimensions: dims + [("outcome", "published")])
        unpublishable = Counter(label: MetricName.captureEvents, dimensions: dims + [("outcome", "unpublishable")])
        echoes = Counter(label: MetricName.captureEchoTransactions, dimensions: dims)
        lag = Metrics.Timer(label: MetricName.captureLag, dimensions: dims)
        up = Gauge(label: MetricName.captureUp, dimensions: dims)
        retained = Gauge(label: MetricName.captureRetainedWAL, dimensions: dims)
        walStatus = Gauge(label: MetricName.captureWALStatus, dimensions: dims)
        slotActive = Gauge(label: MetricName.captureSlotActive, dimensions: dims)
        lastAcknowledged = Gauge(label: MetricName.captureLastAcknowledgedCommit, dimensions: dims)
        for c in [captured, published, unpublishable, echoes] { c.increment(by: 0) }
        for g in [up, retained, walStatus, slotActive, lastAcknowledged] { g.record(0) }
    }

    /// An event handed to the producer.
    func eventCaptured() {
        captured.increment()
        status?.update(region) { $0.eventsCaptured += 1 }
    }

    /// Kafka acknowledged an event of a transaction committed at `commitMicros` (unix µs, as the
    /// server sent it: any value). A commit time after now (clocks apart) is not observed.
    func eventPublished(commitMicros: Int64?, now: Date = Date()) {
        published.increment()
        var commitSeconds: Double?
        if let commitMicros {
            let nowMicros = Int64(exactly: (now.timeIntervalSince1970 * 1_000_000).rounded()) ?? Int64.max
            let (diff, overflow) = nowMicros.subtractingReportingOverflow(commitMicros)
            if !overflow && diff >= 0 {
                let (ns, overflowNs) = diff.multipliedReportingOverflow(by: 1000)
                if !overflowNs { lag.recordNanoseconds(ns) }
            }
            commitSeconds = Double(commitMicros) / 1_000_000
        }
        var newest: Double?
        status?.update(region) { r in
            r.eventsPublished += 1
            if let c = commitSeconds, c > (r.lastAcknowledgedCommit ?? -.infinity) { r.lastAcknowledgedCommit = c }
            newest = r.lastAcknowledgedCommit
        }
        if let newest { lastAcknowledged.record(newest) }
        else if let commitSeconds { lastAcknowledged.record(commitSeconds) }
    }

    func changeUnpublishable() { unpublishable.increment() }
    func echoTransaction() { echoes.increment() }

    /// This instance streams the slot now (`problem` nil) or does not, and why.
    func streaming(_ problem: String?) {
        up.record(problem == nil ? 1 : 0)
        status?.update(region) { r in
            r.streaming = problem == nil
            r.problem = problem
        }
    }

    /// The position reported to the server as confirmed.
    func confirmed(_ lsn: LSN) {
        status?.update(region) { $0.confirmedLSN = "\(lsn)" }
    }

    /// The slot as last read (nil: there is no such slot).
    func slot(_ state: SlotState?) {
        retained.record(Double(state?.retainedBytes ?? 0))
        walStatus.record(SlotState.gaugeValue(walStatus: state?.walStatus, exists: state != nil))
        slotActive.record(state?.active == true ? 1 : 0)
        status?.update(region) { r in
            r.slotActive = state?.active
            r.walStatus = state == nil ? "missing" : state?.walStatus
            r.retainedWALBytes = state?.retainedBytes
            r.slotSampledAt = Date().timeIntervalSince1970
        }
    }
}
