/// What happened to one event in a region (the `outcome` label of `events_total`).
public enum ApplyOutcome: String, Sendable, CaseIterable, Hashable {
    case applied, duplicate, stale
    case skippedOrigin = "skipped_origin"
    case deadLettered = "dead_lettered"
    /// Deleted from the topic (retention) before the region applied it: the broker's low
    /// watermark moved past the region's next offset. Logged with the partition and offsets.
    case gone
}
