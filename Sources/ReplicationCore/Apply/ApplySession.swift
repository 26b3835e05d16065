import PostgresClient

extension PostgresConnection {
    /// The session settings of every connection that applies events (the daemon's pipeline and
    /// `replay`): the apply statements are short and planned alike every time, so JIT only costs;
    /// `work_mem` fits a batch's sorts; no statement may hang a region's apply loop for long.
    static let applySessionSettings = "SET jit = off; SET work_mem = '32MB'; SET statement_timeout = '60s'"

    /// Connects to a region's database for applying events, with ``applySessionSettings``.
    static func openForApply(conninfo: String, applicationName: String) throws(PostgresError) -> PostgresConnection {
        let c = try PostgresConnection(conninfo: conninfo, applicationName: applicationName)
        do {
            try c.execute(applySessionSettings)
        } catch {
            c.close()
            throw error
        }
        return c
    }
}
