import Foundation

/// An AF_UNIX datagram socket playing systemd's notification socket for a daemon under test
/// (pass ``path`` as `NOTIFY_SOCKET`). A thread of its own receives every datagram and keeps
/// it with its arrival time.
final class NotifySocket: Sendable {
    struct Message: Sendable {
        let at: ContinuousClock.Instant
        let text: String
        /// `KEY=VALUE` lines of the datagram.
        var assignments: [String] { text.split(separator: "\n").map(String.init) }
    }

    let path: String
    private let receiver: Receiver

    init() throws {
        path = "/tmp/rr-notify-\(UUID().uuidString.prefix(12)).sock"
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket(AF_UNIX, SOCK_DGRAM): errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \.sun_path)! + bytes.count + 1)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw TestSetupError("bind(\(path)): errno \(e)")
        }
        // Like systemd's own notification socket: any user may send (a daemon under test may
        // run as another user).
        chmod(path, 0o777)
        receiver = Receiver(fd: fd)
        let receiver = self.receiver
        let thread = Thread { receiver.run() }
        thread.name = "notify-socket"
        thread.start()
    }

    /// The receiving thread's state (the thread holds this, not the socket object, so that
    /// dropping the socket object stops the thread).
    private final class Receiver: @unchecked Sendable {
        // @unchecked Sendable: mutable state is guarded by `lock`; `fd` is immutable.
        let fd: Int32
        private let lock = NSLock()
        private var received: [Message] = []
        private var stopped = false
        private let finished = DispatchSemaphore(value: 0)

        init(fd: Int32) { self.fd = fd }

        func run() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while !isStopped {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&pfd, 1, 100) == 1 else { continue }
                let n = recv(fd, &buffer, buffer.count, 0)
                guard n > 0 else { continue }
                let message = Message(at: .now, text: String(decoding: buffer[..<n], as: UTF8.self))
                lock.lock()
                received.append(message)
                lock.unlock()
            }
            finished.signal()
        }

        private var isStopped: Bool {
            lock.lock()
            defer { lock.unlock() }
            return stopped
        }

        var messages: [Message] {
            lock.lock()
            defer { lock.unlock() }
            return received
        }

        func stop() {
            lock.lock()
            stopped = true
            lock.unlock()
            finished.wait()
            close(fd)
        }
    }

    /// Every datagram received so far, in arrival order.
    var messages: [Message] { receiver.messages }

    /// The datagrams holding the assignment `assignment` (`"READY=1"`) or, when it ends with
    /// `=`, any assignment of that key (`"STATUS="`).
    func messages(with assignment: String) -> [Message] {
        messages.filter { m in
            m.assignments.contains { assignment.hasSuffix("=") ? $0.hasPrefix(assignment) : $0 == assignment }
        }
    }

    /// Waits for the first datagram with `assignment` (see ``messages(with:)``) and returns it.
    @discardableResult
    func wait(for assignment: String, after: ContinuousClock.Instant? = nil, timeout: Duration = .seconds(60)) throws -> Message {
        var found: Message?
        try waitUntil("\(assignment) on the notification socket", timeout: timeout, interval: .milliseconds(20)) {
            found = messages(with: assignment).first { m in after.map { m.at >= $0 } ?? true }
            return found != nil
        }
        return found!
    }

    deinit {
        receiver.stop()
        unlink(path)
    }
}
