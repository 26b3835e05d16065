internal import CLibPQ
import Foundation

/// A pipeline sent with ``PostgresConnection/send(_:transaction:)`` whose results are not all
/// read yet. Used with the connection that sent it, from that connection's thread; the
/// connection runs nothing else until ``PostgresConnection/receive(_:)`` has returned.
public final class PostgresPipeline: @unchecked Sendable {
    // @unchecked Sendable: confined to its connection's thread, as the connection is.
    let count: Int
    /// The statements open an explicit transaction: a failure is rolled back before it is thrown.
    let transaction: Bool
    let deadline: ContinuousClock.Instant
    var results: [PostgresResult] = []
    var current: PostgresResult? = nil
    var firstError: PostgresError? = nil
    var transportError: PostgresError? = nil
    var synced = false

    init(count: Int, transaction: Bool, deadline: ContinuousClock.Instant) {
        self.count = count
        self.transaction = transaction
        self.deadline = deadline
        results.reserveCapacity(count)
    }

    /// Every result is read (or the connection failed): ``PostgresConnection/receive(_:)`` will not wait.
    public var isComplete: Bool { synced || transportError != nil }
}

extension PostgresConnection {
    /// ``pipeline(_:)`` for statements that open an explicit transaction (`BEGIN` … `COMMIT`):
    /// when one fails, the aborted transaction is rolled back before the error is thrown, so
    /// the connection can be used again at once.
    public func pipelineTransaction(_ statements: [PostgresStatement]) throws(PostgresError) -> [PostgresResult] {
        try receive(send(statements, transaction: true))
    }

    /// Sends every statement in one pipeline (libpq pipeline mode) followed by one sync, and
    /// then reads all the results: one network round trip for the lot.
    ///
    /// The statements run in order. After the first one that fails, the server skips the rest
    /// up to the sync; that first error is thrown (an explicit `BEGIN` among the statements
    /// leaves the session in a failed transaction then: the caller rolls back).
    /// - Returns: one result per statement.
    /// - Throws: ``PostgresError``; on a transport failure or timeout the connection is closed.
    public func pipeline(_ statements: [PostgresStatement]) throws(PostgresError) -> [PostgresResult] {
        try receive(send(statements, transaction: false))
    }

    /// Sends `statements` as one pipeline with one sync and returns without waiting for the
    /// server: the caller may do other work meanwhile (never with this connection), calling
    /// ``receiveIfReady(_:)`` to take in what has arrived, then ``receive(_:)`` for the results.
    /// - Parameter transaction: the statements open an explicit transaction (`BEGIN` … `COMMIT`):
    ///   ``receive(_:)`` rolls a failed one back before throwing, as ``pipelineTransaction(_:)``.
    /// - Throws: ``PostgresError`` when the statements cannot be sent (the connection is closed).
    public func send(_ statements: [PostgresStatement], transaction: Bool) throws(PostgresError) -> PostgresPipeline {
        let c = try openConnection()
        guard PQenterPipelineMode(c) == 1 else { throw failTransport(c) }
        for st in statements {
            let sent: Int32 = withParameters(st.parameters) { n, types, values, lengths, formats in
                PQsendQueryParams(c, st.sql, n, types, values, lengths, formats, 0)
            }
            guard sent == 1 else { throw failTransport(c) }
        }
        guard PQpipelineSync(c) == 1 else { throw failTransport(c) }
        let deadline = ContinuousClock.now.advanced(by: queryTimeout)
        try flush(c, deadline: deadline)
        return PostgresPipeline(count: statements.count, transaction: transaction, deadline: deadline)
    }

    /// Takes in whatever of `pipeline`'s results has arrived, without waiting.
    /// - Returns: whether every result is in (``receive(_:)`` then returns at once).
    @discardableResult
    public func receiveIfReady(_ pipeline: PostgresPipeline) -> Bool {
        if pipeline.isComplete { return true }
        do throws(PostgresError) {
            return try advance(pipeline, block: false)
        } catch {
            pipeline.transportError = error
            return true
        }
    }

    /// Waits until the server sends something on the connection, or `milliseconds` pass.
    public func waitForInput(milliseconds: Int32) {
        guard let c = conn else { return }
        let sock = PQsocket(c)
        guard sock >= 0 else { return }
        var pfd = pollfd(fd: sock, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, max(0, milliseconds))
    }

    /// Waits for the rest of `pipeline`'s results (until the query timeout after it was sent).
    /// - Returns: one result per statement.
    /// - Throws: the first statement's error (a transaction's is rolled back first); on a
    ///   transport failure or timeout the connection is closed.
    public func receive(_ pipeline: PostgresPipeline) throws(PostgresError) -> [PostgresResult] {
        do throws(PostgresError) {
            if let e = pipeline.transportError { throw e }
            if !pipeline.synced { _ = try advance(pipeline, block: true) }
            guard let c = conn else { throw PostgresError(code: .connectionFailure, message: "connection is closed") }
            if PQexitPipelineMode(c) != 1 { throw failTransport(c) }
            if let firstError = pipeline.firstError {
                if PQstatus(c) != CONNECTION_OK { close() }
                throw firstError
            }
            return pipeline.results
        } catch {
            if pipeline.transaction && isOpen { try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Reads `pipeline`'s results as they arrive, up to its sync; waits for more only when `block`.
    /// - Returns: whether the sync arrived.
    private func advance(_ p: PostgresPipeline, block: Bool) throws(PostgresError) -> Bool {
        guard let c = conn else { throw PostgresError(code: .connectionFailure, message: "connection is closed") }
        while !p.synced {
            if PQisBusy(c) == 1 {
                if PQconsumeInput(c) == 0 { throw failTransport(c) }
                if PQisBusy(c) == 1 {
                    guard block else { return false }
                    try wait(c, events: Int16(POLLIN), deadline: p.deadline)
                    continue
                }
            }
            guard let r = PQgetResult(c) else {
                // The end of one statement's results.
                p.results.append(p.current ?? PostgresResult.empty)
                p.current = nil
                continue
            }
            defer { PQclear(r) }
            switch PQresultStatus(r) {
            case PGRES_PIPELINE_SYNC:
                p.synced = true
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                p.current = PostgresResult(r)
            case PGRES_PIPELINE_ABORTED:
                break  // skipped after an earlier error
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
                if p.firstError == nil { p.firstError = Self.error(from: r, conn: c) }
            default:
                if p.firstError == nil {
                    p.firstError = PostgresError(code: Code("XX000"), message: "unexpected result status in a pipeline")
                }
            }
        }
        return true
    }
}
