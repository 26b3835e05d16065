import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A sender for systemd's service notification protocol (`sd_notify(3)`), without libsystemd.
///
/// Under `Type=notify` systemd passes `NOTIFY_SOCKET`, the address of an `AF_UNIX` datagram
/// socket: a file-system path (`/run/systemd/notify`) or, when it starts with `@`, a name in
/// the abstract namespace. Each message is one datagram of newline-separated `KEY=VALUE`
/// assignments (`READY=1`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1`).
///
/// When `NOTIFY_SOCKET` is unset (not started by systemd, or not `Type=notify`) every send is
/// a no-op, so callers need no special case.
///
/// - Important: ``send(_:)`` never blocks: the datagram goes out with `MSG_DONTWAIT`, so it may
///   be called from Swift's cooperative thread pool. A full receive queue drops the message
///   (reported as an error), exactly like `sd_notify(3)`.
public struct SystemdNotifier: Sendable {
    /// The bytes of `sockaddr_un.sun_path`: the path, or a NUL followed by the abstract name.
    /// `nil` when notifications are disabled.
    let socketPath: [UInt8]?
    /// Why `NOTIFY_SOCKET` is set but unusable (e.g. an unsupported `vsock:` address), if it is.
    public let problem: String?
    /// The watchdog timeout systemd enforces (`WATCHDOG_USEC`, for this process only when
    /// `WATCHDOG_PID` is unset or equal to our pid); `nil` when no watchdog is configured.
    /// Send ``watchdog()`` at least every half of it.
    public let watchdogTimeout: Duration?

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the process environment.
    public init() {
        self.init(environment: ProcessInfo.processInfo.environment, pid: getpid())
    }

    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from `environment`.
    /// - Parameters:
    ///   - environment: the process environment.
    ///   - pid: this process's id, compared with `WATCHDOG_PID`.
    public init(environment: [String: String], pid: Int32) {
        (socketPath, problem) = Self.parseSocket(environment["NOTIFY_SOCKET"])
        watchdogTimeout = Self.parseWatchdog(usec: environment["WATCHDOG_USEC"], pid: environment["WATCHDOG_PID"], ownPid: pid)
    }

    /// Whether messages go anywhere (`NOTIFY_SOCKET` is set and usable).
    public var isEnabled: Bool { socketPath != nil }

    // MARK: - Messages

    /// `READY=1` (start-up finished), optionally with a `STATUS=` line in the same datagram.
    public func ready(status: String? = nil) throws(SystemdNotifierError) {
        try send("READY=1" + (status.map { "\nSTATUS=" + Self.oneLine($0) } ?? ""))
    }

    /// `STOPPING=1` (shutdown begun), optionally with a `STATUS=` line.
    public func stopping(status: String? = nil) throws(SystemdNotifierError) {
        try send("STOPPING=1" + (status.map { "\nSTATUS=" + Self.oneLine($0) } ?? ""))
    }

    /// `WATCHDOG=1`: the service is alive.
    public func watchdog() throws(SystemdNotifierError) { try send("WATCHDOG=1") }

    /// `STATUS=<text>`, shown by `systemctl status` (newlines become spaces).
    public func status(_ text: String) throws(SystemdNotifierError) { try send("STATUS=" + Self.oneLine(text)) }

    /// Sends `message` (newline-separated assignments) as one datagram; a no-op when disabled.
    /// - Throws: ``SystemdNotifierError`` with the `errno` of `socket(2)` or `sendto(2)`.
    public func send(_ message: String) throws(SystemdNotifierError) {
        guard let socketPath else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemdNotifierError(operation: "socket", errno: errno) }
        defer { close(fd) }

        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: socketPath) }
        // A path is NUL-terminated (the structure is zeroed); an abstract name is exactly its bytes.
        let length = MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + socketPath.count + (socketPath.first == 0 ? 0 : 1)
        let bytes = Array(message.utf8)
        while true {
            let sent = bytes.withUnsafeBytes { buffer in
                withUnsafePointer(to: &address) { pointer in
                    pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buffer.baseAddress, buffer.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL), $0, socklen_t(length))
                    }
                }
            }
            if sent >= 0 { return }
            if errno == EINTR { continue }
            throw SystemdNotifierError(operation: "sendto", errno: errno)
        }
    }

    // MARK: - Parsing

    static func parseSocket(_ value: String?) -> (path: [UInt8]?, problem: String?) {
        guard let value, !value.isEmpty else { return (nil, nil) }
        var bytes = Array(value.utf8)
        switch bytes[0] {
        case UInt8(ascii: "/"):
            if bytes.contains(0) { return (nil, "NOTIFY_SOCKET contains a NUL byte") }
        case UInt8(ascii: "@"):
            bytes[0] = 0  // the abstract namespace
        default:
            return (nil, "NOTIFY_SOCKET=\(value) is neither a path nor an abstract socket name (@…); notifications disabled")
        }
        let capacity = MemoryLayout.size(ofValue: sockaddr_un().sun_path)
        // A path needs room for its terminating NUL; an abstract name may use every byte.
        guard bytes.count + (bytes[0] == 0 ? 0 : 1) <= capacity else {
            return (nil, "NOTIFY_SOCKET is longer than a unix socket address (\(capacity) bytes); notifications disabled")
        }
        return (bytes, nil)
    }

    static func parseWatchdog(usec: String?, pid: String?, ownPid: Int32) -> Duration? {
        guard let usec, let micros = Int64(usec), micros > 0 else { return nil }
        if let pid, !pid.isEmpty, Int32(pid) != ownPid { return nil }  // meant for another process
        return .microseconds(micros)
    }

    static func oneLine(_ text: String) -> String {
        String(text.map { $0 == "\n" || $0 == "\r" ? " " : $0 })
    }
}

/// A notification could not be sent (the `errno` of the failed call).
public struct SystemdNotifierError: Error, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public var description: String { "sd_notify \(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}
