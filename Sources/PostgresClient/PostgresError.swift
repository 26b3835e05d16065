/// An error from libpq or the server.
///
/// `description` holds the SQLSTATE and the server's primary message only: never a query
/// parameter, never the conninfo string (which may hold a password).
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    /// A SQLSTATE code (five characters), or one of this wrapper's own pseudo-codes.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let raw: String
        public init(_ raw: String) { self.raw = raw }

        /// The connection could not be made or was lost (libpq gave no SQLSTATE).
        public static let connectionFailure = Code("08006")
        /// The server did not answer within the client-side timeout.
        public static let clientTimeout = Code("RR001")
        /// The conninfo string could not be parsed.
        public static let invalidConninfo = Code("RR002")

        /// The SQLSTATE class (first two characters).
        public var sqlClass: Substring { raw.prefix(2) }
        public var description: String { raw }
    }

    public var code: Code
    public var message: String
    public var detail: String?
    public var file: String
    public var line: Int

    public init(code: Code, message: String, detail: String? = nil, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.detail = detail
        self.file = file
        self.line = line
    }

    /// A failure that goes away by itself (connection loss, server shutdown or overload,
    /// serialization failure, deadlock, timeout, disk full): retry, never dead-letter.
    public var isTransient: Bool {
        switch code.sqlClass {
        case "08", "53", "57", "58", "40", "RR": return code != .invalidConninfo
        default: return code.raw == "55P03" || code.raw == "55006"
        }
    }

    /// The server rejected the data itself (SQLSTATE class 22 data exception or 23 integrity
    /// constraint violation): retrying the same record can never succeed.
    public var isDataError: Bool { code.sqlClass == "22" || code.sqlClass == "23" }

    public var description: String { "Postgres error \(code.raw): \(message)" }
}
