import Foundation
import Testing

@testable import ReplicatorApp

/// A bound AF_UNIX datagram socket standing in for systemd's notification socket.
final class DatagramSocket: @unchecked Sendable {
    // @unchecked Sendable: `fd` is immutable; receiving is done by one test at a time.
    let fd: Int32
    /// The NOTIFY_SOCKET value that reaches this socket.
    let notifyAddress: String
    private let unlinkPath: String?

    /// Binds a socket at a fresh path in /tmp, or a fresh abstract name when `abstract`.
    init(abstract: Bool = false) throws {
        let name = "rr-notify-test-\(UUID().uuidString.prefix(8))"
        let pathBytes: [UInt8]
        if abstract {
            notifyAddress = "@" + name
            pathBytes = [0] + Array(name.utf8)
            unlinkPath = nil
        } else {
            notifyAddress = "/tmp/" + name + ".sock"
            pathBytes = Array(notifyAddress.utf8)
            unlinkPath = notifyAddress
        }
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: pathBytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + pathBytes.count + (abstract ? 0 : 1))
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw POSIXError(.init(rawValue: e)!)
        }
    }

    /// The next datagram, or nil when none arrives within `timeout`.
    func receive(timeout: Duration = .seconds(2)) -> String? {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ms = Int32(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        guard poll(&pfd, 1, ms) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        guard n >= 0 else { return nil }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }

    /// Every datagram that arrives within `duration`.
    func receiveAll(for duration: Duration) -> [String] {
        let end = ContinuousClock.now + duration
        var out: [String] = []
        while case let left = end - ContinuousClock.now, left > .zero {
            if let m = receive(timeout: left) { out.append(m) }
        }
        return out
    }

    /// Every datagram until those received so far satisfy `done`, or `timeout` passes (a
    /// deadline for a condition, not a window: a loaded machine only makes it slower).
    func receiveAll(until done: ([String]) -> Bool, timeout: Duration) -> [String] {
        let end = ContinuousClock.now + timeout
        var out: [String] = []
        while !done(out), case let left = end - ContinuousClock.now, left > .zero {
            if let m = receive(timeout: left) { out.append(m) }
        }
        return out
    }

    /// Receives until a datagram satisfies `predicate` (returned) or `timeout` passes (nil);
    /// the datagrams passed over are appended to `skipped`.
    func receive(until predicate: (String) -> Bool, timeout: Duration, skipped: inout [String]) -> String? {
        let end = ContinuousClock.now + timeout
        while case let left = end - ContinuousClock.now, left > .zero {
            guard let m = receive(timeout: left) else { return nil }
            if predicate(m) { return m }
            skipped.append(m)
        }
        return nil
    }

    deinit {
        close(fd)
        if let unlinkPath { unlink(unlinkPath) }
    }
}

@Suite("sd_notify sender")
struct SystemdNotifierTests {
    @Test("Without NOTIFY_SOCKET every message is a no-op, and there is no watchdog")
    func disabledWithoutSocket() throws {
        let n = SystemdNotifier(environment: ["WATCHDOG_USEC": "30000000"], pid: getpid())
        #expect(!n.isEnabled)
        #expect(n.problem == nil)
        try n.ready(status: "ready")
        try n.watchdog()
        try n.stopping()
        // The watchdog is parsed on its own: a manager may set it; without a socket pings go nowhere.
        #expect(n.watchdogTimeout == .seconds(30))
    }

    @Test("Datagrams reach a socket at a file-system path")
    func pathSocket() throws {
        let s = try DatagramSocket()
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": s.notifyAddress], pid: getpid())
        #expect(n.isEnabled)
        try n.ready(status: "ready; us-east-1 up lag 0 events 0.0s")
        #expect(s.receive() == "READY=1\nSTATUS=ready; us-east-1 up lag 0 events 0.0s")
        try n.watchdog()
        #expect(s.receive() == "WATCHDOG=1")
        try n.status("two\nlines")
        #expect(s.receive() == "STATUS=two lines", "a STATUS value stays on one line")
        try n.stopping(status: "stopping")
        #expect(s.receive() == "STOPPING=1\nSTATUS=stopping")
    }

    @Test("Datagrams reach a socket in the abstract namespace (@name)")
    func abstractSocket() throws {
        let s = try DatagramSocket(abstract: true)
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": s.notifyAddress], pid: getpid())
        #expect(n.isEnabled)
        try n.send("READY=1")
        #expect(s.receive() == "READY=1")
    }

    @Test("A socket nobody listens on is an error naming the call, never a hang")
    func missingSocket() throws {
        let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": "/tmp/rr-notify-nobody-\(UUID().uuidString.prefix(8))"], pid: getpid())
        let error = #expect(throws: SystemdNotifierError.self) { try n.watchdog() }
        #expect(error?.operation == "sendto")
        #expect(error?.errno == ENOENT)
    }

    @Test("Unsupported or oversize NOTIFY_SOCKET values disable notifications with a reason")
    func unusableAddresses() {
        for value in ["vsock:2:1234", "relative/path", "/tmp/" + String(repeating: "x", count: 120)] {
            let n = SystemdNotifier(environment: ["NOTIFY_SOCKET": value], pid: getpid())
            #expect(!n.isEnabled, "\(value)")
            #expect(n.problem?.contains("NOTIFY_SOCKET") == true, "\(value)")
        }
        #expect(SystemdNotifier(environment: ["NOTIFY_SOCKET": ""], pid: getpid()).problem == nil)
    }

    @Test("WATCHDOG_USEC becomes the timeout, only for our own pid")
    func watchdogParsing() {
        func timeout(_ env: [String: String]) -> Duration? { SystemdNotifier(environment: env, pid: 4242).watchdogTimeout }
        #expect(timeout(["WATCHDOG_USEC": "2000000"]) == .seconds(2))
        #expect(timeout(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4242"]) == .seconds(2))
        #expect(timeout(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "4243"]) == nil, "meant for another process")
        #expect(timeout(["WATCHDOG_USEC": "0"]) == nil)
        #expect(timeout(["WATCHDOG_USEC": "-5"]) == nil)
        #expect(timeout(["WATCHDOG_USEC": "soon"]) == nil)
        #expect(timeout([:]) == nil)
    }
}
