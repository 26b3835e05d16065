import Foundation

/// A blocking HTTP/1.1 GET/HEAD client over a plain socket (`Connection: close`), for the
/// daemon's endpoint and a Prometheus server's API. Independent of the daemon's own client.
enum HTTPProbe {
    struct Response {
        var status: Int
        var headers: [String: String]  // lower-cased names
        var body: Data
        var text: String { String(decoding: body, as: UTF8.self) }

        func json() throws -> [String: Any] {
            guard let o = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
                throw TestSetupError("not a JSON object: \(text.prefix(300))")
            }
            return o
        }
    }

    static func get(port: Int, _ path: String, method: String = "GET", timeout: TimeInterval = 5) throws -> Response {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSetupError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { throw TestSetupError("connect 127.0.0.1:\(port): \(String(cString: strerror(errno)))") }
        let request = Array("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        guard send(fd, request, request.count, Int32(MSG_NOSIGNAL)) == request.count else {
            throw TestSetupError("send: \(String(cString: strerror(errno)))")
        }
        var raw = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n == 0 { break }
            guard n > 0 else {
                if errno == EINTR { continue }
                throw TestSetupError("recv from 127.0.0.1:\(port)\(path): \(String(cString: strerror(errno)))")
            }
            raw.append(contentsOf: buffer[0..<n])
        }
        guard let split = raw.range(of: Data("\r\n\r\n".utf8)) else { throw TestSetupError("malformed response from \(path)") }
        let head = String(decoding: raw[..<split.lowerBound], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = head[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else { throw TestSetupError("bad status line \(head[0])") }
        var headers: [String: String] = [:]
        for line in head.dropFirst() {
            guard let c = line.firstIndex(of: ":") else { continue }
            headers[line[..<c].lowercased()] = line[line.index(after: c)...].trimmingCharacters(in: .whitespaces)
        }
        var body = Data(raw[split.upperBound...])
        if headers["transfer-encoding"]?.contains("chunked") == true { body = try dechunk(body) }
        else if let n = headers["content-length"].flatMap({ Int($0) }), method != "HEAD" { body = body.prefix(n) }
        return Response(status: status, headers: headers, body: body)
    }

    private static func dechunk(_ data: Data) throws -> Data {
        var out = Data()
        var rest = data[...]
        while let lineEnd = rest.range(of: Data("\r\n".utf8)) {
            guard let size = Int(String(decoding: rest[..<lineEnd.lowerBound], as: UTF8.self).split(separator: ";")[0], radix: 16)
            else { throw TestSetupError("bad chunk size") }
            if size == 0 { return out }
            let start = lineEnd.upperBound
            out.append(rest[start..<start + size])
            rest = rest[(start + size + 2)...]
        }
        throw TestSetupError("truncated chunked body")
    }

    /// A TCP port that is free on 127.0.0.1 right now (the kernel's pick for port 0).
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else { throw TestSetupError("cannot find a free port: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

// MARK: - The daemon's endpoint

/// The daemon's HTTP endpoint, as an SRE reads it.
struct DaemonEndpoint {
    let port: Int

    func get(_ path: String, method: String = "GET") throws -> HTTPProbe.Response {
        try HTTPProbe.get(port: port, path, method: method)
    }

    /// `/lag`, parsed: region → its object.
    func lag() throws -> [String: [String: Any]] {
        let r = try get("/lag")
        guard r.status == 200 else { throw TestSetupError("/lag answered \(r.status): \(r.text)") }
        guard let regions = try r.json()["regions"] as? [[String: Any]] else { throw TestSetupError("/lag has no regions: \(r.text)") }
        return Dictionary(uniqueKeysWithValues: regions.map { ($0["region"] as? String ?? "?", $0) })
    }

    /// region → the partitions this instance owns now (`/lag` `assigned_partitions`).
    func assignedPartitions() throws -> [String: Set<Int>] { Self.assignedPartitions(in: try lag()) }

    /// The same, from a `/lag` already read with ``lag()``.
    static func assignedPartitions(in lag: [String: [String: Any]]) -> [String: Set<Int>] {
        lag.mapValues { region in
            Set(((region["assigned_partitions"] as? [Any]) ?? []).compactMap { ($0 as? NSNumber)?.intValue })
        }
    }

    /// `/metrics`, parsed: `name{labels}` → value.
    func metrics() throws -> [String: Double] {
        let r = try get("/metrics")
        guard r.status == 200 else { throw TestSetupError("/metrics answered \(r.status)") }
        return Self.samples(r.text)
    }

    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = v
        }
        return out
    }
}

extension Dictionary where Key == String, Value == Any {
    func int(_ key: String) -> Int64? { (self[key] as? NSNumber)?.int64Value }
    func double(_ key: String) -> Double? { (self[key] as? NSNumber)?.doubleValue }
}

// MARK: - Prometheus tools (Debian package `prometheus`)

enum PrometheusTools {
    static let promtool = "/usr/bin/promtool"
    static let prometheus = "/usr/bin/prometheus"

    static func require(_ path: String) throws {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestSetupError("\(path) is missing: install the Debian package `prometheus` (scripts/test does)")
        }
    }

    /// The package root (for `monitoring/`).
    static let packageRoot: String = {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0..<4 { url.deleteLastPathComponent() }  // Support, EndToEndTests, Tests, root
        return url.path
    }()

    /// Runs `promtool ARGS`, with `stdinFile` as standard input; returns (status, output).
    static func promtool(_ args: [String], stdinFile: String? = nil) throws -> (status: Int32, output: String) {
        try require(promtool)
        let out = NSTemporaryDirectory() + "rr-promtool-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var command = ([promtool] + args).map(shellQuote).joined(separator: " ")
        if let stdinFile { command += " < " + shellQuote(stdinFile) }
        let child = try ChildProcess("/bin/sh", ["-c", command], outputPath: out)
        let status = try child.wait(timeout: .seconds(60))
        return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }

    static func shellQuote(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

/// A Prometheus server on 127.0.0.1 scraping the daemon every second; killed on deinit.
final class PrometheusServer: @unchecked Sendable {
    let port: Int
    let dir: String
    private let child: ChildProcess

    var logPath: String { dir + "/prometheus.log" }
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    init(scraping target: Int, ruleFiles: [String] = []) throws {
        try PrometheusTools.require(PrometheusTools.prometheus)
        dir = NSTemporaryDirectory() + "rr-prometheus-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        var yaml = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: region-replicator
                static_configs:
                  - targets: ["127.0.0.1:\(target)"]

            """
        if !ruleFiles.isEmpty { yaml += "rule_files:\n" + ruleFiles.map { "  - \"\($0)\"\n" }.joined() }
        try yaml.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
        port = try HTTPProbe.freePort()
        child = try ChildProcess(PrometheusTools.prometheus, [
            "--config.file=\(dir)/prometheus.yml", "--web.listen-address=127.0.0.1:\(port)",
            "--storage.tsdb.path=\(dir)/data", "--log.level=warn",
        ], outputPath: dir + "/prometheus.log")
    }

    /// `GET /api/v1/query?query=…`: the result vector as (labels, value).
    func query(_ promql: String) throws -> [(labels: [String: String], value: Double)] {
        let q = promql.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? promql
        let r = try HTTPProbe.get(port: port, "/api/v1/query?query=\(q)")
        guard r.status == 200, let data = try r.json()["data"] as? [String: Any],
              let result = data["result"] as? [[String: Any]] else {
            throw TestSetupError("query \(promql) answered \(r.status): \(r.text.prefix(300))")
        }
        return result.map { e in
            let labels = e["metric"] as? [String: String] ?? [:]
            let v = ((e["value"] as? [Any])?.last as? String).flatMap(Double.init) ?? .nan
            return (labels, v)
        }
    }

    /// `GET /api/v1/rules`: every loaded rule as (name, health, lastError).
    func rules() throws -> [(name: String, health: String, error: String?)] {
        let r = try HTTPProbe.get(port: port, "/api/v1/rules")
        guard r.status == 200, let data = try r.json()["data"] as? [String: Any], let groups = data["groups"] as? [[String: Any]] else {
            throw TestSetupError("/api/v1/rules answered \(r.status): \(r.text.prefix(300))")
        }
        return groups.flatMap { ($0["rules"] as? [[String: Any]]) ?? [] }.map {
            ($0["name"] as? String ?? "?", $0["health"] as? String ?? "?", $0["lastError"] as? String)
        }
    }

    func kill() {
        child.signal(SIGKILL)
        _ = try? child.wait(timeout: .seconds(10))
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: dir)
    }
}
