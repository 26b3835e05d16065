public import PostgresClient

/// The replication origins that mark the applier's transactions in a capturing region, so that
/// capture recognises them in the region's log (pgoutput sends an `O` message naming the
/// origin) and never publishes the rows it applied from other regions again.
///
/// An origin can be set up in one session at a time, so each applier connection takes the first
/// free name of a pool, `region_replicator_apply_1` … `_64`, creating it when it does not exist
/// yet. Origins are per cluster (every database of the server shares them); each one in use holds
/// one of the server's `max_replication_slots` progress entries.
public enum ApplierOrigin {
    public static let prefix = "region_replicator_apply_"
    public static let poolSize = 64

    /// Whether an origin named in the stream marks the applier's own writes.
    public static func isApplier(_ origin: String) -> Bool { origin.hasPrefix(prefix) }

    public static func name(_ n: Int) -> String { prefix + String(n) }

    /// Sets up the first origin of the pool that no other session holds, for every later
    /// transaction of `db`'s session.
    /// - Returns: its name.
    /// - Throws: ``PostgresError``: no privilege (`42501`; the role needs `EXECUTE` on
    ///   `pg_replication_origin_session_setup`, or superuser), too few replication slots for
    ///   another origin in use (`53400`), or every name of the pool in use (`55006`).
    @discardableResult
    public static func markSession(_ db: PostgresConnection) throws(PostgresError) -> String {
        for n in 1...poolSize {
            let origin = name(n)
            do {
                try db.query("SELECT pg_replication_origin_session_setup($1)", [origin])
                return origin
            } catch where error.code.raw == "55006" {
                continue  // active in another session
            } catch where error.code.raw == "42704" {
                try create(origin, on: db)
                do {
                    try db.query("SELECT pg_replication_origin_session_setup($1)", [origin])
                    return origin
                } catch where error.code.raw == "55006" {
                    continue
                }
            }
        }
        throw PostgresError(code: PostgresError.Code("55006"),
                            message: "every applier replication origin (\(name(1)) … \(name(poolSize))) is in use by another session")
    }

    /// Creates the origins `1…count` of the pool that do not exist yet.
    /// - Returns: the names created.
    public static func ensure(count: Int, on db: PostgresConnection) throws(PostgresError) -> [String] {
        var created: [String] = []
        for n in 1...max(1, min(count, poolSize)) {
            let origin = name(n)
            let exists = try db.query("SELECT pg_replication_origin_oid($1) IS NOT NULL", [origin]).rows.first?.first == "t"
            if !exists {
                try create(origin, on: db)
                created.append(origin)
            }
        }
        return created
    }

    private static func create(_ origin: String, on db: PostgresConnection) throws(PostgresError) {
        do {
            try db.query("SELECT pg_replication_origin_create($1)", [origin])
        } catch where error.code.raw == "23505" || error.code.raw == "42710" {
            // Created by another session meanwhile.
        }
    }
}
