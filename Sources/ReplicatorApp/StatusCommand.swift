import ArgumentParser
import Foundation
import Yams
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - status

/// `region-replicator status`: the per-region lag table of a running daemon, from its `/lag`.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the per-region lag of a running daemon (from its HTTP endpoint).",
        discussion: """
            Fetches GET /lag from the daemon at --url, or at http://<http.listen> of the configuration \
            file. Exit codes: 0 ok, 64 usage, 69 daemon unreachable, 78 configuration error, 1 other.
            """)

    @Option(name: .long, help: "Configuration file (YAML); its http.listen locates the daemon. Default: \(ReplicatorConfig.defaultPath).")
    var config: String?

    @Option(name: .long, help: "The daemon's base URL, e.g. http://127.0.0.1:9466 (instead of --config).")
    var url: String?

    @Flag(name: .long, help: "Print the /lag JSON body as received.")
    var json = false

    @Option(name: .long, help: "Seconds to wait for the daemon.")
    var timeout: Int = 5

    func validate() throws {
        if config != nil && url != nil { throw ValidationError("give --config or --url, not both") }
        if timeout < 1 { throw ValidationError("--timeout must be at least 1 second") }
    }

    func run() async throws {
        let target = try resolveTarget()
        let request = PlainHTTP.Request(method: "GET", host: target.host, port: target.port, path: target.basePath + "/lag",
                                        timeout: .seconds(timeout))
        let response: PlainHTTP.Response
        do {
            response = try await onBlockingThread { try PlainHTTP.perform(request) }
        } catch {
            printError("cannot reach the daemon at \(target.display)/lag: \(error) (is `region-replicator run` running, and is http.listen \(url == nil ? "in \(config ?? ReplicatorConfig.defaultPath) " : "")right?)")
            throw ExitCode.unavailable
        }
        guard response.status == 200 else {
            printError("\(target.display)/lag answered HTTP \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            throw ExitCode.failure
        }
        if json {
            FileHandle.standardOutput.write(Data(response.body))
            if response.body.last != UInt8(ascii: "\n") { print() }
            return
        }
        let doc: LagDocument
        do {
            doc = try JSONDecoder().decode(LagDocument.self, from: Data(response.body))
        } catch {
            printError("\(target.display)/lag did not answer with a region-replicator /lag document: \(error)")
            throw ExitCode.failure
        }
        print(Self.render(doc), terminator: "")
    }

    /// Where the daemon listens: from `--url`, else from the configuration's `http.listen`.
    func resolveTarget() throws -> (host: String, port: Int, basePath: String, display: String) {
        if let url {
            guard let c = URLComponents(string: url), c.scheme?.lowercased() == "http", let host = c.host, !host.isEmpty else {
                printError("--url \(url): expected http://HOST[:PORT] (https is not supported; the endpoint is meant for loopback)")
                throw ExitCode.usage
            }
            let port = c.port ?? 80
            var base = c.percentEncodedPath
            while base.hasSuffix("/") { base.removeLast() }
            let h = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
            return (h, port, base, "http://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)\(base)")
        }
        let path = config ?? ReplicatorConfig.defaultPath
        let host: String, port: Int
        do {
            (host, port) = try Self.listenAddress(configPath: path, environment: ProcessInfo.processInfo.environment)
        } catch {
            printError("configuration error: \(error)")
            throw ExitCode.configuration
        }
        // A wildcard listener is reached on loopback.
        let connectHost = host == "0.0.0.0" || host.isEmpty ? "127.0.0.1" : host == "::" ? "::1" : host
        return (connectHost, port, "", "http://\(connectHost.contains(":") ? "[\(connectHost)]" : connectHost):\(port)")
    }

    struct ListenError: Error, CustomStringConvertible {
        var description: String
    }

    /// `http.listen` as the daemon reads it: `REGION_REPLICATOR_HTTP_LISTEN`, else the file's
    /// `http.listen`, else the default.
    ///
    /// Only that key is read: `status` needs no credentials, so a `dsn_file` that only the
    /// daemon can read (systemd `LoadCredential=`) is no obstacle.
    static func listenAddress(configPath path: String, environment: [String: String]) throws(ListenError) -> (host: String, port: Int) {
        var listen = ReplicatorConfig.HTTP().listen
        var key = "http.listen (default)"
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ListenError(description: "\(path): cannot read configuration file: \((error as NSError).localizedDescription)")
        }
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw ListenError(description: "\(path): not valid YAML: \(error)")
        }
        if let root, !(root is [AnyHashable: Any]) {
            throw ListenError(description: "\(path): the top level must be a mapping")
        }
        if let http = (root as? [AnyHashable: Any])?["http"] {
            guard let section = http as? [AnyHashable: Any] else { throw ListenError(description: "\(path): http: must be a mapping") }
            if let value = section["listen"] {
                guard let v = value as? String ?? (value as? any CustomStringConvertible)?.description else {
                    throw ListenError(description: "\(path): http.listen: must be host:port")
                }
                listen = v
                key = "http.listen"
            }
        }
        // The environment overrides the file, as for the daemon.
        if let env = environment["REGION_REPLICATOR_HTTP_LISTEN"] {
            listen = env
            key = "REGION_REPLICATOR_HTTP_LISTEN"
        }
        switch ReplicatorConfig.checkListen(listen) {
        case .success(let pair): return pair
        case .failure(let why): throw ListenError(description: "\(path): \(key): \(why.description)")
        }
    }

    /// The table: REGION, UP, LAG EVENTS, LAG SECONDS, REPLICATED THROUGH, and each down
    /// region's problem below it.
    static func render(_ doc: LagDocument) -> String {
        var table = TextTable(header: ["REGION", "UP", "LAG EVENTS", "LAG SECONDS", "REPLICATED THROUGH"], rightAligned: [2, 3])
        for r in doc.regions {
            // Figures nobody has measured yet (the lag monitor never read the broker's high
            // watermarks) are unknown, not 0: a daemon that never reached Kafka is not caught up.
            let measured = r.lagSampleTimestamp != nil
            table.append([r.region, r.up ? "yes" : "NO",
                          measured ? String(r.lagEvents) : "unknown",
                          measured ? String(format: "%.3f", r.lagSeconds) : "unknown",
                          measured ? r.replicatedThrough : "unknown"])
        }
        var out = table.rendered
        if doc.kafka != "ok" { out += "\nkafka: \(doc.kafka)\n" }
        let down = doc.regions.filter { !$0.up }
        if !down.isEmpty {
            out += "\n"
            for r in down { out += "\(r.region): \(r.problem ?? "down")\n" }
        }
        return out
    }
}

// MARK: - A minimal HTTP/1.1 client

#if os(Linux)
/// No SIGPIPE when the daemon closes first.
private let sendFlags = Int32(MSG_NOSIGNAL)
#else
private let sendFlags: Int32 = 0
#endif

/// One HTTP/1.1 request over a plain TCP socket, `Connection: close`, blocking with deadlines.
///
/// Enough for `status` to read `/lag` from a daemon on loopback without a networking
/// dependency (FoundationNetworking would make the binary need libcurl at run time).
///
/// - Important: Blocking: call it off Swift's cooperative pool (``onBlockingThread(_:)``).
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
