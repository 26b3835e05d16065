import PostgresClient

/// How long a connection that applies events lets one statement take (`apply.statement_timeout_ms`),
/// and what follows from it.
public struct ApplyTimeouts: Sendable, Hashable {
    /// The server's `statement_timeout` for every apply statement.
    public var statement: Duration
    /// The server's `lock_timeout`, below ``statement``: a statement that waits this long for a
    /// lock fails with SQLSTATE 55P03 (a wait, retried whole with backoff), told apart from a
    /// statement that is too slow (57014).
    public var lock: Duration

    public static let defaultStatement: Duration = .seconds(60)
    public static let defaultLock: Duration = .seconds(10)

    /// - Parameter lock: nil: ``defaultLock``, or half the statement timeout when that is shorter.
    public init(statement: Duration = ApplyTimeouts.defaultStatement, lock: Duration? = nil) {
        self.statement = statement
        self.lock = lock ?? min(Self.defaultLock, statement / 2)
    }

    /// Client-side limit for one answer of the server.
    public var answer: Duration { statement }

    /// Longest a healthy pipeline loop goes without a heartbeat: one attempt (a reconnect of at
    /// most 5 s plus an answer) with room to spare; half again the statement timeout (90 s by default).
    public var heartbeat: Duration { max(statement * 3 / 2, answer + .seconds(10)) }

    /// The session settings: the apply statements are short and planned alike every time, so
    /// JIT only costs; `work_mem` fits a batch's sorts; no statement may hang a region's apply loop for long.
    var sessionSettings: String {
        "SET jit = off; SET work_mem = '32MB'; SET statement_timeout = '\(statement.milliseconds)ms'; SET lock_timeout = '\(lock.milliseconds)ms'"
    }
}

extension PostgresConnection {
    /// Connects to a region's database for applying events, with ``ApplyTimeouts/sessionSettings``.
    static func openForApply(conninfo: String, applicationName: String,
                             timeouts: ApplyTimeouts = ApplyTimeouts()) throws(PostgresError) -> PostgresConnection {
        let c = try PostgresConnection(conninfo: conninfo, applicationName: applicationName, queryTimeout: timeouts.answer)
        do {
            try c.execute(timeouts.sessionSettings)
        } catch {
            c.close()
            throw error
        }
        return c
    }
}
