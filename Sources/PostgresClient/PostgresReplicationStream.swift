internal import CLibPQ
import Foundation

/// A logical replication stream: a libpq connection in replication mode
/// (`replication=database`) that streams a slot with `START_REPLICATION … LOGICAL`, reads the
/// server's CopyData messages — XLogData (`w`) and keepalives (`k`) — and sends standby status
/// updates (`r`).
///
/// - Important: Every method blocks on the network (never longer than its timeout). Use the
///   stream from one dedicated thread, never from Swift's cooperative pool.
public final class PostgresReplicationStream: @unchecked Sendable {
    // @unchecked Sendable: the PGconn is used by one thread at a time (documented contract).
    private var conn: OpaquePointer?

    /// One message from the server.
    public enum Message: Sendable, Hashable {
        /// WAL data: `start` is the WAL position of the data (for pgoutput, of the change or,
        /// for a commit, the end of the commit record), `end` the server's current WAL end.
        case xlogData(start: UInt64, end: UInt64, sendTime: Int64, data: [UInt8])
        /// A keepalive with the server's WAL end; `replyRequested` asks for a status update now.
        case keepalive(end: UInt64, sendTime: Int64, replyRequested: Bool)
    }

    /// Connects in replication mode.
    /// - Parameters:
    ///   - conninfo: a libpq keyword/value string or URI (never included in an error). Its own
    ///     settings win, except `replication`, which is always `database`.
    ///   - applicationName: default `application_name` (shown in `pg_stat_replication`).
    /// - Throws: ``PostgresError`` (transient when the server is unreachable).
    public init(conninfo: String, applicationName: String, connectTimeoutSeconds: Int = 5) throws(PostgresError) {
        // Text output the decoder can read whatever the role's settings: ISO dates. The
        // conninfo's own `options` win (they come after).
        let c = try PostgresConnection.connect(conninfo: conninfo, applicationName: applicationName,
                                               connectTimeoutSeconds: connectTimeoutSeconds,
                                               before: [("options", "-c datestyle=ISO,YMD")], after: [("replication", "database")])
        conn = c
        PQsetnonblocking(c, 1)
    }

    deinit { close() }

    /// Closes the connection (the server ends its walsender). Idempotent.
    public func close() {
        if let c = conn { PQfinish(c) }
        conn = nil
    }

    public var isOpen: Bool {
        guard let conn else { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    /// Starts streaming `slot` from `start` (0: from the slot's confirmed position) with the
    /// output plugin's `options` (e.g. `proto_version` `1`, `publication_names` `p`).
    /// - Parameter slot: a replication slot name (`[a-z0-9_]`, at most 63 bytes).
    /// - Throws: ``PostgresError``: the server's refusal with its SQLSTATE (`42704` no such
    ///   slot, `55006` the slot is active for another process), or a transport failure.
    public func startLogical(slot: String, start: UInt64, options: [(String, String)],
                             timeout: Duration = .seconds(30)) throws(PostgresError) {
        guard Self.isSlotName(slot), options.allSatisfy({ Self.isSlotName($0.0) }) else {
            throw PostgresError(code: PostgresError.Code("42602"), message: "invalid replication slot or option name")
        }
        let c = try openConnection()
        let opts = options.map { "\"\($0.0)\" '\($0.1.replacingOccurrences(of: "'", with: "''"))'" }.joined(separator: ", ")
        let lsn = String(start >> 32, radix: 16, uppercase: true) + "/" + String(start & 0xFFFF_FFFF, radix: 16, uppercase: true)
        let sql = "START_REPLICATION SLOT \"\(slot)\" LOGICAL \(lsn)" + (opts.isEmpty ? "" : " (\(opts))")
        guard PQsendQuery(c, sql) == 1 else { throw failTransport(c) }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        try flush(c, deadline: deadline)
        while PQisBusy(c) == 1 {
            guard try wait(c, events: Int16(POLLIN), deadline: deadline) else {
                close()
                throw PostgresError(code: .clientTimeout, message: "no answer to START_REPLICATION within \(timeout) (connection closed)")
            }
            if PQconsumeInput(c) == 0 { throw failTransport(c) }
        }
        guard let r = PQgetResult(c) else { throw failTransport(c) }
        defer { PQclear(r) }
        switch PQresultStatus(r) {
        case PGRES_COPY_BOTH:
            return
        case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
            let e = PostgresConnection.error(from: r, conn: c)
            close()
            throw e
        default:
            close()
            throw PostgresError(code: PostgresError.Code("XX000"), message: "unexpected answer to START_REPLICATION")
        }
    }

    /// The next message, or nil when none arrived within `timeout` (`.zero`: only what the
    /// socket holds already, without waiting) or when `wakeOn` became readable first.
    /// - Parameter wakeOn: another file descriptor to wait on (e.g. the producer's
    ///   delivery-report pipe); it is only watched, never read.
    /// - Throws: ``PostgresError`` when the connection fails, the server ends the stream (with
    ///   its error, e.g. the slot was dropped), or a message is malformed (code `XX000`,
    ///   connection closed): the server's bytes are never trusted.
    public func receive(timeout: Duration, wakeOn: Int32? = nil) throws(PostgresError) -> Message? {
        let c = try openConnection()
        var deadline: ContinuousClock.Instant?
        var read = false
        while true {
            var buffer: UnsafeMutablePointer<CChar>? = nil
            let n = PQgetCopyData(c, &buffer, 1)
            if n > 0, let buffer {
                defer { PQfreemem(buffer) }
                do throws(PostgresError) {
                    return try Self.parse(UnsafeRawBufferPointer(start: buffer, count: Int(n)))
                } catch {
                    close()
                    throw error
                }
            }
            if n == 0 {
                // What the socket already holds first (no poll); then wait.
                if read {
                    let until = deadline ?? ContinuousClock.now.advanced(by: timeout)
                    deadline = until
                    guard try wait(c, events: Int16(POLLIN), deadline: until, wakeOn: wakeOn) else { return nil }
                }
                read = true
                if PQconsumeInput(c) == 0 { throw failTransport(c) }
                continue
            }
            if n == -1 { throw streamEnded(c) }
            throw failTransport(c)
        }
    }

    /// Sends a standby status update: the positions written, flushed (what the slot may
    /// confirm) and applied, and whether the server should answer with a keepalive at once.
    public func sendStatus(written: UInt64, flushed: UInt64, applied: UInt64, replyRequested: Bool = false,
                           timeout: Duration = .seconds(10)) throws(PostgresError) {
        let c = try openConnection()
        var message: [UInt8] = [UInt8(ascii: "r")]
        let clock = Int64(Date().timeIntervalSince1970 * 1_000_000) - 946_684_800_000_000
        for v in [written, flushed, applied, UInt64(bitPattern: clock)] {
            for i in (0..<8).reversed() { message.append(UInt8(truncatingIfNeeded: v >> (i * 8))) }
        }
        message.append(replyRequested ? 1 : 0)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let put = message.withUnsafeBufferPointer { b in
                b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { PQputCopyData(c, $0, Int32(b.count)) }
            }
            if put == 1 { break }
            if put < 0 { throw failTransport(c) }
            // The send queue is full: let it drain.
            try flush(c, deadline: deadline)
        }
        try flush(c, deadline: deadline)
    }

    // MARK: - Frames

    /// Parses one CopyData payload of the streaming protocol.
    static func parse(_ b: [UInt8]) throws(PostgresError) -> Message {
        try b.withUnsafeBytes { r in Result { () throws(PostgresError) -> Message in try parse(r) } }.get()
    }

    /// Parses one CopyData payload of the streaming protocol (copies only the XLogData's data).
    static func parse(_ b: UnsafeRawBufferPointer) throws(PostgresError) -> Message {
        func bad(_ what: String) -> PostgresError {
            PostgresError(code: PostgresError.Code("XX000"), message: "malformed replication message: \(what) (connection closed)")
        }
        func int64(_ at: Int) -> UInt64 { (at..<(at + 8)).reduce(0) { $0 << 8 | UInt64(b[$1]) } }
        guard let kind = b.first else { throw bad("empty") }
        switch kind {
        case UInt8(ascii: "w"):
            guard b.count >= 25 else { throw bad("XLogData of \(b.count) bytes (at least 25)") }
            return .xlogData(start: int64(1), end: int64(9), sendTime: Int64(bitPattern: int64(17)),
                             data: Array(UnsafeRawBufferPointer(rebasing: b[25...])))
        case UInt8(ascii: "k"):
            guard b.count == 18 else { throw bad("keepalive of \(b.count) bytes (18 expected)") }
            guard b[17] <= 1 else { throw bad("keepalive reply flag \(b[17])") }
            return .keepalive(end: int64(1), sendTime: Int64(bitPattern: int64(9)), replyRequested: b[17] == 1)
        default:
            throw bad("unknown message type 0x\(String(kind, radix: 16))")
        }
    }

    static func isSlotName(_ s: String) -> Bool {
        !s.isEmpty && s.utf8.count <= 63 && s.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) || $0 == 95 }
    }

    // MARK: - Transport

    private func openConnection() throws(PostgresError) -> OpaquePointer {
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            close()
            throw PostgresError(code: .connectionFailure, message: "connection is closed")
        }
        return c
    }

    /// The server ended the COPY: its error (a dropped slot, a terminated walsender) or a note that it ended.
    private func streamEnded(_ c: OpaquePointer) -> PostgresError {
        var error = PostgresError(code: .connectionFailure, message: "the server ended the replication stream")
        while let r = PQgetResult(c) {
            let status = PQresultStatus(r)
            if status == PGRES_FATAL_ERROR || status == PGRES_NONFATAL_ERROR || status == PGRES_BAD_RESPONSE {
                error = PostgresConnection.error(from: r, conn: c)
            }
            PQclear(r)
            if status == PGRES_COPY_BOTH || status == PGRES_COPY_OUT { break }
        }
        close()
        return error
    }

    private func flush(_ c: OpaquePointer, deadline: ContinuousClock.Instant) throws(PostgresError) {
        while true {
            let f = PQflush(c)
            if f == 0 { return }
            if f < 0 { throw failTransport(c) }
            guard try wait(c, events: Int16(POLLOUT | POLLIN), deadline: deadline) else {
                close()
                throw PostgresError(code: .clientTimeout, message: "the server took nothing within the timeout (connection closed)")
            }
            if PQconsumeInput(c) == 0 { throw failTransport(c) }
        }
    }

    /// Waits until the socket is ready; false when `deadline` passed first or `wakeOn` became
    /// readable.
    private func wait(_ c: OpaquePointer, events: Int16, deadline: ContinuousClock.Instant,
                      wakeOn: Int32? = nil) throws(PostgresError) -> Bool {
        let sock = PQsocket(c)
        guard sock >= 0 else { throw failTransport(c) }
        while true {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero { return false }
            let ms = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            var pfds = [pollfd(fd: sock, events: events, revents: 0), pollfd(fd: wakeOn ?? -1, events: Int16(POLLIN), revents: 0)]
            let n = poll(&pfds, wakeOn == nil ? 1 : 2, min(ms, 1000))
            if n > 0 {
                if pfds[0].revents != 0 { return true }
                if pfds[1].revents != 0 { return false }
            }
            if n < 0 && errno != EINTR { throw failTransport(c) }
        }
    }

    private func failTransport(_ c: OpaquePointer) -> PostgresError {
        let msg = PostgresConnection.cleanMessage(PQerrorMessage(c))
        close()
        return PostgresError(code: .connectionFailure, message: msg.isEmpty ? "connection lost" : msg)
    }
}
