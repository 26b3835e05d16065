import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - A minimal HTTP/1.1 client

#if os(Linux)
/// No SIGPIPE when the daemon closes first.
private let sendFlags = Int32(MSG_NOSIGNAL)
#else
private let sendFlags: Int32 = 0
#endif

/// One HTTP/1.1 request over a plain TCP socket, `Connection: close`, blocking with deadlines.
///
/// Enough for `status` to read `/lag` from a daemon on loopback (plain HTTP, one GET, no TLS,
/// no redirects) without a networking dependency. Both well-kept clients were measured in this
/// package (debug build, 2 shared cores) and cost more than this file:
/// - async-http-client: +284 s of compiler CPU on every clean build (swift-nio-ssl with its
///   BoringSSL copy, swift-nio-http2, …), a 48 % larger binary (82.6 → 122.2 MB) and +8 MB RSS
///   for `status` (36 → 44 MB).
/// - URLSession (FoundationNetworking): no build cost, but eight more shared libraries at run
///   time (libcurl4, libnghttp2, librtmp, libssh2, libpsl, brotli, …), a dependency the
///   installed binary does not have today, and +4.6 MB RSS.
///
/// - Important: Blocking: call it off Swift's cooperative pool (``BlockingThread``).
enum PlainHTTP {
    struct Request: Sendable {
        var method: String
        var host: String
        var port: Int
        var path: String
        var timeout: Duration
        var headers: [(String, String)] = []
        var body: [UInt8] = []

        init(method: String = "GET", host: String, port: Int, path: String, timeout: Duration = .seconds(5),
             headers: [(String, String)] = [], body: [UInt8] = []) {
            self.method = method
            self.host = host
            self.port = port
            self.path = path
            self.timeout = timeout
            self.headers = headers
            self.body = body
        }
    }

    struct Response: Sendable {
        var status: Int
        /// Header names lower-cased, in order.
        var headers: [(name: String, value: String)]
        var body: [UInt8]

        func header(_ name: String) -> String? { headers.first { $0.name == name.lowercased() }?.value }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ d: String) { description = d }
    }

    /// The largest response read (a /metrics body of many regions is far smaller).
    static let maxResponseBytes = 64 << 20

    static func perform(_ request: Request) throws -> Response {
        let deadline = ContinuousClock.now.advanced(by: request.timeout)
        let fd = try openSocket(host: request.host, port: request.port, deadline: deadline)
        defer { close(fd) }
        let hostHeader = request.host.contains(":") ? "[\(request.host)]:\(request.port)" : "\(request.host):\(request.port)"
        var head = "\(request.method) \(request.path.isEmpty ? "/" : request.path) HTTP/1.1\r\nHost: \(hostHeader)\r\n"
        head += "User-Agent: region-replicator/\(replicatorVersion)\r\nAccept: */*\r\nConnection: close\r\n"
        for (k, v) in request.headers { head += "\(k): \(v)\r\n" }
        if !request.body.isEmpty { head += "Content-Length: \(request.body.count)\r\n" }
        head += "\r\n"
        try writeAll(fd, Array(head.utf8) + request.body, deadline: deadline)
        let raw = try readAll(fd, deadline: deadline)
        return try parse(raw, isHead: request.method == "HEAD")
    }

    private static func remainingMs(_ deadline: ContinuousClock.Instant) throws -> Int32 {
        let left = deadline - ContinuousClock.now
        guard left > .zero else { throw Failure("timed out") }
        let ms = left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000
        return Int32(clamping: max(1, ms))
    }

    private static func errnoText(_ what: String, _ code: Int32 = errno) -> Failure {
        Failure("\(what): \(String(cString: strerror(code)))")
    }

    private static func openSocket(host: String, port: Int, deadline: ContinuousClock.Instant) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        #if canImport(Glibc) || canImport(Musl)
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        #else
        hints.ai_socktype = SOCK_STREAM
        #endif
        hints.ai_flags = AI_NUMERICSERV
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &list)
        guard rc == 0, let first = list else {
            throw Failure("cannot resolve \(host): \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(list) }
        var lastError = Failure("no address for \(host)")
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            cursor = ai.pointee.ai_next
            let fd = socket(ai.pointee.ai_family, ai.pointee.ai_socktype, ai.pointee.ai_protocol)
            guard fd >= 0 else { lastError = errnoText("socket"); continue }
            let flags = fcntl(fd, F_GETFL, 0)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            if connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 { return fd }
            guard errno == EINPROGRESS else { lastError = errnoText("connect"); close(fd); continue }
            do {
                try waitFor(fd, events: Int16(POLLOUT), deadline: deadline)
                var err: Int32 = 0
                var len = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
                if err == 0 { return fd }
                lastError = errnoText("connect", err)
            } catch let f as Failure {
                lastError = Failure("connect: \(f.description)")
            }
            close(fd)
        }
        throw lastError
    }

    private static func waitFor(_ fd: Int32, events: Int16, deadline: ContinuousClock.Instant) throws {
        while true {
            var p = pollfd(fd: fd, events: events, revents: 0)
            let n = poll(&p, 1, try remainingMs(deadline))
            if n > 0 { return }
            if n < 0 && errno != EINTR { throw errnoText("poll") }
        }
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], deadline: ContinuousClock.Instant) throws {
        var sent = 0
        while sent < bytes.count {
            try waitFor(fd, events: Int16(POLLOUT), deadline: deadline)
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, sendFlags) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                throw errnoText("send")
            }
            sent += n
        }
    }

    private static func readAll(_ fd: Int32, deadline: ContinuousClock.Instant) throws -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            try waitFor(fd, events: Int16(POLLIN), deadline: deadline)
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return out }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                if errno == ECONNRESET && !out.isEmpty { return out }
                throw errnoText("recv")
            }
            out.append(contentsOf: buffer[0..<n])
            guard out.count <= maxResponseBytes else { throw Failure("response larger than \(maxResponseBytes) bytes") }
        }
    }

    /// Parses a whole `Connection: close` response: status line, headers, and a body delimited by
    /// Content-Length, chunked encoding or the end of the stream.
    static func parse(_ raw: [UInt8], isHead: Bool = false) throws -> Response {
        let crlfcrlf: [UInt8] = [13, 10, 13, 10]
        guard let end = raw.indices.dropLast(3).first(where: { raw[$0..<$0 + 4].elementsEqual(crlfcrlf) }) else {
            throw Failure(raw.isEmpty ? "the connection closed without a response" : "malformed HTTP response (no end of headers)")
        }
        let lines = String(decoding: raw[0..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
            throw Failure("malformed HTTP status line: \(lines[0].prefix(100))")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var response = Response(status: status, headers: headers, body: [])
        let rest = Array(raw[(end + 4)...])
        if isHead || status == 204 || status == 304 || (100..<200).contains(status) { return response }
        if response.header("transfer-encoding")?.lowercased().contains("chunked") == true {
            response.body = try dechunk(rest)
        } else if let length = response.header("content-length").flatMap({ Int($0) }) {
            guard rest.count >= length else { throw Failure("truncated body: \(rest.count) of \(length) bytes") }
            response.body = Array(rest.prefix(length))
        } else {
            response.body = rest
        }
        return response
    }

    private static func dechunk(_ data: [UInt8]) throws -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        while true {
            guard let lineEnd = data[i...].indices.dropLast().first(where: { data[$0] == 13 && data[$0 + 1] == 10 }) else {
                throw Failure("truncated chunked body")
            }
            let sizeText = String(decoding: data[i..<lineEnd], as: UTF8.self).split(separator: ";").first ?? ""
            guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                throw Failure("malformed chunk size")
            }
            i = lineEnd + 2
            if size == 0 { return out }
            guard data.count >= i + size else { throw Failure("truncated chunked body") }
            out.append(contentsOf: data[i..<i + size])
            i += size + 2
        }
    }
}
