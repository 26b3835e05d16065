internal import CLibPQ
import Foundation

/// One libpq connection (`PGconn*`).
///
/// - Important: Every method blocks on the network. Use the connection from one dedicated
///   thread at a time, never from Swift's cooperative pool.
public final class PostgresConnection: @unchecked Sendable {
    // @unchecked Sendable: the PGconn is used by one thread at a time (documented contract);
    // the class has no other mutable state.
    var conn: OpaquePointer?
    /// Client-side limit for one statement; a stalled server (SIGSTOP) is detected by it.
    public var queryTimeout: Duration

    /// Connects.
    /// - Parameters:
    ///   - conninfo: a libpq keyword/value string or URI. It may contain a password: it is never
    ///     included in an error.
    ///   - applicationName: default `application_name` (the conninfo's own value wins).
    ///   - connectTimeoutSeconds: default `connect_timeout` (the conninfo's own value wins).
    /// - Throws: ``PostgresError`` (transient when the server is unreachable).
    public init(conninfo: String, applicationName: String = "region-replicator",
                connectTimeoutSeconds: Int = 5, queryTimeout: Duration = .seconds(60)) throws(PostgresError) {
        self.queryTimeout = queryTimeout
        let c = try Self.connect(conninfo: conninfo, applicationName: applicationName, connectTimeoutSeconds: connectTimeoutSeconds)
        conn = c
        PQsetnonblocking(c, 1)
    }

    /// Opens a libpq connection with our client settings (application name, connect timeout,
    /// TCP keepalives): `before` go ahead of the conninfo (which may override them), `after`
    /// follow it (they win). The one place a connection is opened.
    /// - Throws: ``PostgresError`` with a secret-free message (the conninfo is never quoted).
    static func connect(conninfo: String, applicationName: String, connectTimeoutSeconds: Int,
                        before: [(String, String)] = [], after: [(String, String)] = []) throws(PostgresError) -> OpaquePointer {
        _ = try parse(conninfo)  // syntax check with a secret-free error
        let settings = [("application_name", applicationName), ("connect_timeout", String(connectTimeoutSeconds)),
                        ("keepalives_idle", "10"), ("keepalives_interval", "5"), ("keepalives_count", "3"),
                        ("tcp_user_timeout", "30000")] + before + [("dbname", conninfo)] + after
        let c: OpaquePointer? = withCStrings(settings.map(\.0)) { k in
            withCStrings(settings.map(\.1)) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let c else { throw PostgresError(code: .connectionFailure, message: "out of memory") }
        if PQstatus(c) != CONNECTION_OK {
            let msg = cleanMessage(PQerrorMessage(c))
            PQfinish(c)
            throw PostgresError(code: .connectionFailure, message: msg)
        }
        return c
    }

    deinit { close() }

    /// Closes the connection. Idempotent.
    public func close() {
        if let c = conn { PQfinish(c) }
        conn = nil
    }

    /// Whether the connection is open and not known to be broken.
    public var isOpen: Bool {
        guard let conn else { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    /// Runs one statement with text-format parameters (`nil` = SQL NULL).
    /// - Throws: ``PostgresError``; on a transport failure or timeout the connection is closed
    ///   (``isOpen`` becomes false) and the error is transient.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws(PostgresError) -> PostgresResult {
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            close()
            throw PostgresError(code: .connectionFailure, message: "connection is closed")
        }
        let sent: Int32 = withOptionalCStrings(parameters) { values in
            PQsendQueryParams(c, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        guard sent == 1 else { throw failTransport(c) }
        return try collect(c)
    }

    /// Runs one statement with typed parameters (text or binary format).
    /// - Throws: ``PostgresError``, as for text parameters.
    @discardableResult
    public func query(_ sql: String, parameters: [PostgresParameter]) throws(PostgresError) -> PostgresResult {
        let c = try openConnection()
        let sent: Int32 = withParameters(parameters) { n, types, values, lengths, formats in
            PQsendQueryParams(c, sql, n, types, values, lengths, formats, 0)
        }
        guard sent == 1 else { throw failTransport(c) }
        return try collect(c)
    }

    /// Runs one or more statements without parameters (simple query protocol).
    public func execute(_ sql: String) throws(PostgresError) {
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            close()
            throw PostgresError(code: .connectionFailure, message: "connection is closed")
        }
        guard PQsendQuery(c, sql) == 1 else { throw failTransport(c) }
        _ = try collect(c)
    }

    // MARK: - Result collection with a client-side deadline

    func openConnection() throws(PostgresError) -> OpaquePointer {
        guard let c = conn, PQstatus(c) == CONNECTION_OK else {
            close()
            throw PostgresError(code: .connectionFailure, message: "connection is closed")
        }
        return c
    }

    /// Flushes the outgoing buffer (non-blocking mode).
    func flush(_ c: OpaquePointer, deadline: ContinuousClock.Instant) throws(PostgresError) {
        while true {
            let f = PQflush(c)
            if f == 0 { break }
            if f < 0 { throw failTransport(c) }
            try wait(c, events: Int16(POLLOUT | POLLIN), deadline: deadline)
            if PQconsumeInput(c) == 0 { throw failTransport(c) }
        }
    }

    private func collect(_ c: OpaquePointer) throws(PostgresError) -> PostgresResult {
        let deadline = ContinuousClock.now.advanced(by: queryTimeout)
        try flush(c, deadline: deadline)
        var result: PostgresResult? = nil
        var firstError: PostgresError? = nil
        while true {
            while PQisBusy(c) == 1 {
                try wait(c, events: Int16(POLLIN), deadline: deadline)
                if PQconsumeInput(c) == 0 { throw failTransport(c) }
            }
            guard let r = PQgetResult(c) else { break }
            defer { PQclear(r) }
            switch PQresultStatus(r) {
            case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
                result = PostgresResult(r)
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE:
                if firstError == nil { firstError = Self.error(from: r, conn: c) }
            default:
                if firstError == nil {
                    firstError = PostgresError(code: Code("XX000"), message: "unexpected result status")
                }
            }
        }
        if let firstError {
            if PQstatus(c) != CONNECTION_OK { close() }
            throw firstError
        }
        return result ?? PostgresResult.empty
    }

    typealias Code = PostgresError.Code

    func wait(_ c: OpaquePointer, events: Int16, deadline: ContinuousClock.Instant) throws(PostgresError) {
        let sock = PQsocket(c)
        guard sock >= 0 else { throw failTransport(c) }
        while true {
            let remaining = deadline - ContinuousClock.now
            if remaining <= .zero {
                close()
                throw PostgresError(code: .clientTimeout,
                                    message: "no answer from the server within \(queryTimeout) (connection closed)")
            }
            let ms = Int32(clamping: remaining.components.seconds * 1000 + remaining.components.attoseconds / 1_000_000_000_000_000 + 1)
            var pfd = pollfd(fd: sock, events: events, revents: 0)
            let n = poll(&pfd, 1, min(ms, 1000))
            if n > 0 { return }
            if n < 0 && errno != EINTR { throw failTransport(c) }
        }
    }

    func failTransport(_ c: OpaquePointer) -> PostgresError {
        let msg = Self.cleanMessage(PQerrorMessage(c))
        close()
        return PostgresError(code: .connectionFailure, message: msg.isEmpty ? "connection lost" : msg)
    }

    static func error(from r: OpaquePointer, conn c: OpaquePointer) -> PostgresError {
        func field(_ f: Character) -> String? {
            guard let p = PQresultErrorField(r, Int32(f.asciiValue!)) else { return nil }
            return oneLine(String(cString: p))
        }
        let state = field("C") ?? (PQstatus(c) == CONNECTION_OK ? "XX000" : "08006")
        let primary = field("M") ?? cleanMessage(PQresultErrorMessage(r))
        return PostgresError(code: Code(state), message: primary, detail: field("D"))
    }

    static func cleanMessage(_ p: UnsafePointer<CChar>?) -> String {
        guard let p else { return "" }
        return oneLine(String(cString: p))
    }

    /// libpq's and the server's messages on one line: each line trimmed (libpq indents its
    /// hints with a tab: `…failed: Connection refused\n\tIs the server running…`), empty lines
    /// dropped, the rest joined with `; `, any remaining tab a space. A log line or a table
    /// cell then never breaks.
    static func oneLine(_ text: String) -> String {
        text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\r\n" })
            .map { $0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "\t", with: " ") }
            .filter { !$0.isEmpty }
            .joined(separator: "; ")
    }

    // MARK: - Conninfo inspection (for secret-free descriptions)

    /// Parses a conninfo string into its keywords and values.
    /// - Throws: a ``PostgresError`` with code ``PostgresError/Code/invalidConninfo`` whose
    ///   message never quotes the string (it may contain a password).
    public static func parse(_ conninfo: String) throws(PostgresError) -> [String: String] {
        var errmsg: UnsafeMutablePointer<CChar>? = nil
        guard let opts = PQconninfoParse(conninfo, &errmsg) else {
            if let errmsg { PQfreemem(errmsg) }
            throw PostgresError(code: .invalidConninfo,
                                message: "the DSN is not a valid libpq connection string or URI (not shown: it may contain a password)")
        }
        defer { PQconninfoFree(opts) }
        var out: [String: String] = [:]
        var p = opts
        while let kw = p.pointee.keyword {
            if let v = p.pointee.val { out[String(cString: kw)] = String(cString: v) }
            p += 1
        }
        return out
    }

    /// A description of where a conninfo points, without the password: `host:port/dbname as user`.
    public static func describe(_ conninfo: String) -> String {
        guard let o = try? parse(conninfo) else { return "<invalid DSN>" }
        let host = o["host"] ?? o["hostaddr"] ?? "localhost"
        return "\(host):\(o["port"] ?? "5432")/\(o["dbname"] ?? o["user"] ?? "?")"
            + (o["user"].map { " as \($0)" } ?? "")
    }
}

// MARK: - C string arrays

func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let dup = strings.map { strdup($0) }
    defer { dup.forEach { free($0) } }
    var ptrs: [UnsafePointer<CChar>?] = dup.map { UnsafePointer($0) }
    ptrs.append(nil)
    return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    if strings.isEmpty { return body(nil) }
    let dup = strings.map { $0.map { strdup($0) } ?? nil }
    defer { dup.forEach { if let p = $0 { free(p) } } }
    let ptrs: [UnsafePointer<CChar>?] = dup.map { $0.map { UnsafePointer($0) } }
    return ptrs.withUnsafeBufferPointer { body($0.baseAddress!) }
}

/// Calls `body` with libpq's parallel parameter arrays (count, types, values, lengths, formats).
func withParameters<R>(
    _ parameters: [PostgresParameter],
    _ body: (Int32, UnsafePointer<Oid>?, UnsafePointer<UnsafePointer<CChar>?>?, UnsafePointer<Int32>?, UnsafePointer<Int32>?) -> R
) -> R {
    if parameters.isEmpty { return body(0, nil, nil, nil, nil) }
    var types = [Oid](repeating: 0, count: parameters.count)
    var lengths = [Int32](repeating: 0, count: parameters.count)
    var formats = [Int32](repeating: 0, count: parameters.count)
    // One contiguous buffer holds every value (text values NUL-terminated).
    var buffer: [UInt8] = []
    var starts = [Int](repeating: -1, count: parameters.count)
    for (i, p) in parameters.enumerated() {
        switch p {
        case .null:
            break
        case .text(let s):
            starts[i] = buffer.count
            buffer.append(contentsOf: s.utf8)
            buffer.append(0)
        case .binary(let b, let oid):
            starts[i] = buffer.count
            buffer.append(contentsOf: b)
            types[i] = Oid(oid)
            lengths[i] = Int32(b.count)
            formats[i] = 1
        }
    }
    if buffer.isEmpty { buffer.append(0) }
    return buffer.withUnsafeBufferPointer { buf in
        let base = UnsafeRawPointer(buf.baseAddress!).assumingMemoryBound(to: CChar.self)
        let values: [UnsafePointer<CChar>?] = starts.map { $0 < 0 ? nil : base + $0 }
        return values.withUnsafeBufferPointer { v in
            types.withUnsafeBufferPointer { t in
                lengths.withUnsafeBufferPointer { l in
                    formats.withUnsafeBufferPointer { f in
                        body(Int32(parameters.count), t.baseAddress, v.baseAddress, l.baseAddress, f.baseAddress)
                    }
                }
            }
        }
    }
}
