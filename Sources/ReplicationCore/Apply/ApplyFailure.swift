public import PostgresClient

/// What the pipeline does about a failed batch, decided by the SQLSTATE alone
/// (``classify(_:)``; the table is in docs/operations.md).
public enum ApplyFailure: String, Sendable, CaseIterable, Hashable {
    /// Goes away by itself (connection loss, failover, overload, conflicts): retry the same
    /// batch with capped backoff, partitions paused.
    case transient
    /// The batch as a whole is too big for the server: apply it in halves. A single record
    /// the server refuses even alone is too big by its own content: it becomes a dead letter.
    case split
    /// The batch was cut short: its statement ran into the statement timeout, was cancelled
    /// (`pg_cancel_backend`, a long-query killer), or the server ran out of memory. A cancel, a
    /// stall and a batch too slow all look alike (SQLSTATE 57014): apply it in halves, but a
    /// single record is retried with backoff, never dead-lettered — a wait says nothing about
    /// the record's content.
    case slow
    /// The server rejects the data of some record: isolate it by bisection, dead-letter it.
    case deadLetter = "dead_letter"
    /// The region's schema is not what the daemon needs (a missing table or column): the
    /// region stops (`up 0` with the problem), retries slowly; never a dead letter, never an exit.
    case schema
    /// The region's stored offsets are not the ones the pipeline believed (a restore, a manual
    /// reset, another writer): the batch rolled back; re-read them and continue from there.
    case offsetsMoved = "offsets_moved"

    /// The SQLSTATE raised inside a batch's transaction when its partitions' stored offsets moved.
    public static let offsetsMovedCode = "RRM01"
    /// The SQLSTATE raised inside a batch's transaction when an upsert would change a stored
    /// message's `session_id` or `created_at` (class 23: the record becomes a dead letter,
    /// reason `identity_changed`).
    public static let identityChangedCode = "23R01"

    /// Classifies a SQLSTATE (five characters).
    public static func classify(_ sqlstate: String) -> ApplyFailure {
        if sqlstate == offsetsMovedCode { return .offsetsMoved }
        switch sqlstate {
        case "08P01": return .split  // protocol violation: a message too large for the server
        case "53200": return .slow  // out of memory: the server's state, not the record's
        case "57014": return .slow  // statement timeout or cancel: smaller transactions may finish
        case "42P01", "42703", "42883", "3F000", "42501", "42704": return .schema
        case "55P03", "55006", "25006", "25P02": return .transient  // 55P03: lock_timeout, a lock wait
        default: break
        }
        switch sqlstate.prefix(2) {
        case "22", "23": return .deadLetter  // data exception, integrity constraint violation
        case "54": return .split  // program limit exceeded (statement too complex, too many parameters)
        case "08", "53", "57", "58", "40", "XX", "RR": return .transient
        case "42", "0A": return .schema  // the statements do not fit the region's tables
        default: return .transient
        }
    }

    public static func classify(_ error: PostgresError) -> ApplyFailure {
        if error.code == .invalidConninfo { return .schema }
        return classify(error.code.raw)
    }
}
