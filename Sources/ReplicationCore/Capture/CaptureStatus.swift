import Foundation
import Synchronization

/// One capturing region's capture side as `/lag` and `region-replicator status` show it.
public struct CaptureRegionStatus: Sendable, Hashable {
    public var region: String
    public var slot: String
    /// This instance streams the region's slot now.
    public var streaming = false
    /// Why this instance does not stream (no secrets); nil while it streams.
    public var problem: String? = "not started yet"
    /// The position this instance last reported to the server as confirmed.
    public var confirmedLSN: String?
    /// From `pg_replication_slots`, read periodically (nil: not read yet).
    public var slotActive: Bool?
    public var walStatus: String?
    public var retainedWALBytes: Int64?
    /// Unix time the slot was last read.
    public var slotSampledAt: Double?
    /// Commit time (unix seconds) of the newest transaction with an event Kafka acknowledged.
    public var lastAcknowledgedCommit: Double?
    /// Events made from the region's own writes and handed to the producer, since start.
    public var eventsCaptured: Int64 = 0
    /// Events Kafka acknowledged, since start.
    public var eventsPublished: Int64 = 0

    public init(region: String, slot: String) {
        self.region = region
        self.slot = slot
    }
}

/// Shared, thread-safe state of every capturing region of this instance: the capture threads
/// write it, the HTTP endpoint snapshots it.
public final class CaptureStatus: Sendable {
    private let state: Mutex<[String: CaptureRegionStatus]>

    /// - Parameter regions: each capturing region and its slot.
    public init(regions: [(region: String, slot: String)]) {
        state = Mutex(Dictionary(regions.map { ($0.region, CaptureRegionStatus(region: $0.region, slot: $0.slot)) },
                                 uniquingKeysWith: { a, _ in a }))
    }

    /// Every capturing region's status, by region.
    public func snapshot() -> [String: CaptureRegionStatus] { state.withLock { $0 } }

    func update(_ region: String, _ body: (inout CaptureRegionStatus) -> Void) {
        state.withLock { s in
            guard var r = s[region] else { return }
            body(&r)
            s[region] = r
        }
    }
}
