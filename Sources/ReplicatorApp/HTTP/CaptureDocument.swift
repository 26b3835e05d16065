import Foundation
import ReplicationCore

/// The `capture` object of a capturing region in `/lag` (docs/metrics.md), also decoded by
/// `region-replicator status`. Every key is always written (null when unknown).
struct CaptureDocument: Codable, Sendable, Equatable {
    var slot: String
    /// This instance streams the region's slot now.
    var streaming: Bool
    /// Why this instance does not stream (another instance does: "standing by: …"); null while it streams.
    var problem: String?
    /// The position this instance last reported to the server as confirmed.
    var confirmedLSN: String?
    /// From `pg_replication_slots` (any instance streaming it counts as active).
    var slotActive: Bool?
    /// `reserved`, `extended`, `unreserved`, `lost`, or `missing` (no such slot).
    var walStatus: String?
    var retainedWALBytes: Int64?
    /// When the slot was last read (RFC 3339).
    var slotSampledAt: String?
    /// Commit time of the newest transaction with an event Kafka acknowledged (RFC 3339).
    var lastAcknowledgedCommit: String?
    var eventsCaptured: Int64
    var eventsPublished: Int64

    enum CodingKeys: String, CodingKey {
        case slot, streaming, problem
        case confirmedLSN = "confirmed_lsn"
        case slotActive = "slot_active"
        case walStatus = "wal_status"
        case retainedWALBytes = "retained_wal_bytes"
        case slotSampledAt = "slot_sampled_at"
        case lastAcknowledgedCommit = "last_acknowledged_commit"
        case eventsCaptured = "events_captured"
        case eventsPublished = "events_published"
    }

    init(slot: String, streaming: Bool, problem: String?, confirmedLSN: String?, slotActive: Bool?, walStatus: String?,
         retainedWALBytes: Int64?, slotSampledAt: String?, lastAcknowledgedCommit: String?, eventsCaptured: Int64,
         eventsPublished: Int64) {
        self.slot = slot
        self.streaming = streaming
        self.problem = problem
        self.confirmedLSN = confirmedLSN
        self.slotActive = slotActive
        self.walStatus = walStatus
        self.retainedWALBytes = retainedWALBytes
        self.slotSampledAt = slotSampledAt
        self.lastAcknowledgedCommit = lastAcknowledgedCommit
        self.eventsCaptured = eventsCaptured
        self.eventsPublished = eventsPublished
    }

    init(_ c: CaptureRegionStatus, redact: (String) -> String) {
        self.init(slot: c.slot, streaming: c.streaming, problem: c.problem.map(redact), confirmedLSN: c.confirmedLSN,
                  slotActive: c.slotActive, walStatus: c.walStatus, retainedWALBytes: c.retainedWALBytes,
                  slotSampledAt: c.slotSampledAt.map(LagDocument.rfc3339),
                  lastAcknowledgedCommit: c.lastAcknowledgedCommit.map(LagDocument.rfc3339),
                  eventsCaptured: c.eventsCaptured, eventsPublished: c.eventsPublished)
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(slot, forKey: .slot)
        try c.encode(streaming, forKey: .streaming)
        try c.encode(problem, forKey: .problem)
        try c.encode(confirmedLSN, forKey: .confirmedLSN)
        try c.encode(slotActive, forKey: .slotActive)
        try c.encode(walStatus, forKey: .walStatus)
        try c.encode(retainedWALBytes, forKey: .retainedWALBytes)
        try c.encode(slotSampledAt, forKey: .slotSampledAt)
        try c.encode(lastAcknowledgedCommit, forKey: .lastAcknowledgedCommit)
        try c.encode(eventsCaptured, forKey: .eventsCaptured)
        try c.encode(eventsPublished, forKey: .eventsPublished)
    }

    /// Bytes for people: `512 B`, `16.0 MiB`, `2.5 GiB`.
    static func bytes(_ n: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(n), unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(n) B" : String(format: "%.1f %@", value, units[unit])
    }
}

extension Status {
    /// The capture table below the lag table, for the regions that capture: whether this
    /// instance streams the slot, its WAL status and retained WAL, the confirmed position, the
    /// newest acknowledged commit and the events published; then why a region does not stream.
    static func renderCapture(_ doc: LagDocument) -> String {
        let capturing = doc.regions.compactMap { r in r.capture.map { (r.region, $0) } }
        guard !capturing.isEmpty else { return "" }
        var table = TextTable(header: ["CAPTURE", "STREAMING", "WAL STATUS", "RETAINED WAL", "CONFIRMED LSN",
                                       "LAST ACKNOWLEDGED COMMIT", "PUBLISHED"], rightAligned: [3, 6])
        for (region, c) in capturing {
            table.append([region, c.streaming ? "yes" : "no", c.walStatus ?? "unknown",
                          c.retainedWALBytes.map(CaptureDocument.bytes) ?? "unknown", c.confirmedLSN ?? "-",
                          c.lastAcknowledgedCommit ?? "-", String(c.eventsPublished)])
        }
        var out = "\n" + table.rendered
        let notes = capturing.filter { $0.1.problem != nil || $0.1.walStatus == "lost" }
        if !notes.isEmpty {
            out += "\n"
            for (region, c) in notes {
                if c.walStatus == "lost" {
                    out += "\(region): capture slot \(c.slot) is LOST (invalidated): see \"A capture slot is lost\" in docs/operations.md\n"
                } else if let p = c.problem {
                    out += "\(region): capture: \(p)\n"
                }
            }
        }
        return out
    }
}
