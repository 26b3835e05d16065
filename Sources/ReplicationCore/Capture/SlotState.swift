public import PostgresClient

/// A region's replication slot as `pg_replication_slots` shows it: read when a capture session
/// starts and every ``RegionCapture/slotSampleInterval`` while it streams, on the capture
/// thread's own connection.
public struct SlotState: Sendable, Hashable {
    /// A walsender (of this instance or of another) streams the slot now.
    public var active: Bool
    /// The process id of that walsender, if any.
    public var activePID: Int32?
    /// `reserved`, `extended`, `unreserved` or `lost` (nil when the server gives none).
    public var walStatus: String?
    /// WAL the slot holds on the server: `pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)`
    /// (nil when the slot holds none: invalidated, or not read).
    public var retainedBytes: Int64?
    /// The slot's confirmed flush position.
    public var confirmed: LSN?

    public init(active: Bool, activePID: Int32? = nil, walStatus: String?, retainedBytes: Int64?, confirmed: LSN?) {
        self.active = active
        self.activePID = activePID
        self.walStatus = walStatus
        self.retainedBytes = retainedBytes
        self.confirmed = confirmed
    }

    /// The slot was invalidated (it needed more WAL than `max_slot_wal_keep_size` lets a slot
    /// keep): it can never stream again; the changes since its confirmed position are gone.
    public var lost: Bool { walStatus == "lost" }

    /// The value of `region_replicator_capture_slot_wal_status` (docs/metrics.md).
    public static func gaugeValue(walStatus: String?, exists: Bool) -> Double {
        guard exists else { return 5 }
        switch walStatus {
        case "reserved": return 1
        case "extended": return 2
        case "unreserved": return 3
        case "lost": return 4
        default: return 0
        }
    }

    /// Reads the slot named `slot`; nil when there is none. Every field of the reply is parsed
    /// defensively: a value that does not parse is unknown (nil), never a trap.
    public static func read(_ db: PostgresConnection, slot: String) throws(PostgresError) -> SlotState? {
        guard let row = try db.query("""
            SELECT active::text, active_pid::text, wal_status,
                   pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END,
                                   restart_lsn)::text,
                   confirmed_flush_lsn::text
            FROM pg_replication_slots WHERE slot_name = $1
            """, [slot]).rows.first, row.count == 5 else { return nil }
        return SlotState(active: row[0] == "true" || row[0] == "t", activePID: row[1].flatMap { Int32($0) },
                         walStatus: row[2], retainedBytes: row[3].flatMap(Self.bytes), confirmed: row[4].flatMap { LSN(text: $0) })
    }

    /// `pg_wal_lsn_diff`'s numeric text (may carry a fraction, or be negative right after a
    /// slot's creation) as bytes held: nil when it does not parse, 0 when negative.
    static func bytes(_ text: String) -> Int64? {
        let whole = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? text
        guard let n = Int64(whole) else { return nil }
        return max(0, n)
    }
}
