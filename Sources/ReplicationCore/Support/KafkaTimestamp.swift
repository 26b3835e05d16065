/// What the daemon makes of a record's Kafka timestamp: milliseconds since the epoch as the
/// producer (CreateTime) or the broker (LogAppendTime) set it — any 64-bit value. A producer with
/// the wrong unit (nanoseconds, microseconds) or a clock far off sends values a real broker
/// accepts as they are. The rules (docs/events.md, "Record metadata"):
///
/// - negative: no timestamp (Kafka's -1; the consumer reports none);
/// - stored as `replicator_offsets.last_record_at` only from 0 to 9999-12-31T23:59:59.999Z
///   (``maxStoredMs``), else NULL;
/// - used as the age of a record (lag, apply latency) only when not after the clock reading it is
///   compared with: a record stamped in the future has an unknown age, and the lag falls back to
///   what the daemon observed itself (``ReplicationStatus``).
public enum KafkaTimestamp {
    /// 9999-12-31T23:59:59.999Z, the last millisecond of the event contract's years.
    public static let maxStoredMs: Int64 = 253_402_300_799_999

    /// `ms` as `timestamptz` microseconds for `last_record_at`, or nil (NULL) when it is absent,
    /// negative or after ``maxStoredMs``.
    public static func storedMicroseconds(_ ms: Int64?) -> Int64? {
        guard let ms, ms >= 0, ms <= maxStoredMs else { return nil }
        return ms * 1000  // ≤ 2.6e17: no overflow
    }

    /// `ms` as the instant a record was produced, for a clock reading `nowMs`: nil when absent,
    /// negative or after `nowMs`.
    public static func past(_ ms: Int64?, nowMs: Int64) -> Int64? {
        guard let ms, ms >= 0, ms <= nowMs else { return nil }
        return ms
    }

    /// Nanoseconds from `ms` to `committedAtMs` (the apply latency of a record), or nil when the
    /// timestamp is absent, negative or after the commit; saturated at `Int64.max`.
    public static func latencyNanoseconds(_ ms: Int64?, committedAtMs: Int64) -> Int64? {
        guard let ms = past(ms, nowMs: committedAtMs) else { return nil }
        return (committedAtMs - ms).saturatingMultiplied(by: 1_000_000)  // both ≥ 0: the difference fits
    }
}
