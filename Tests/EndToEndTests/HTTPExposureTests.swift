import Foundation
import Testing

/// How exposed the daemon's HTTP endpoint is: loopback unless configured otherwise, a warning
/// when it is not, and nothing that changes state whatever is asked.
@Suite("HTTP endpoint exposure", .serialized)
struct HTTPExposureTests {
    @Test("A non-loopback http.listen logs a warning naming it; a loopback one does not; no method but GET/HEAD is served")
    func nonLoopbackBindWarns() throws {
        try TestEnvironment.requireBinary()
        let cluster = try TestCluster()
        let dir = NSTemporaryDirectory() + "rr-http-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let closedPort = try freeLoopbackPort()
        for (host, warns) in [("0.0.0.0", true), ("127.0.0.1", false)] {
            let port = try freeLoopbackPort()
            let config = dir + "/config-\(host).yaml"
            try """
                kafka:
                  brokers: "\(cluster.bootstrap)"
                  topic: \(cluster.topic)
                regions:
                  - name: eu-west-1
                    dsn: "host=127.0.0.1 port=\(closedPort) dbname=app user=replicator connect_timeout=2"
                http:
                  listen: "\(host):\(port)"
                """.write(toFile: config, atomically: true, encoding: .utf8)
            let daemon = try Daemon(["run", "--config", config], logPath: dir + "/daemon-\(host).log")
            defer { daemon.kill9() }
            let endpoint = DaemonEndpoint(port: port)
            try waitUntil("the endpoint on \(host):\(port) to answer", timeout: .seconds(30)) {
                (try? endpoint.get("/health/live")) != nil
            }
            let warning = "http.listen is not a loopback address"
            #expect(daemon.log.contains(warning) == warns, "\(host): \(daemon.log.prefix(3000))")
            if warns { #expect(daemon.log.contains("\(host):\(port)"), "the warning does not name the address") }
            for path in ["/metrics", "/lag", "/health/live", "/health/ready", "/health/deep", "/", "/config"] {
                for method in ["POST", "PUT", "DELETE", "PATCH"] {
                    let r = try endpoint.get(path, method: method)
                    #expect(r.status == 405 || r.status == 404, "\(method) \(path) → \(r.status)")
                }
            }
            daemon.signal(SIGTERM)
            #expect(try daemon.wait() == 0)
        }
    }
}
