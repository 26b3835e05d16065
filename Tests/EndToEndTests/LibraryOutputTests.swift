import Foundation
import Testing

/// What the C libraries say reaches the user through our own output only: librdkafka's lines go
/// through the logger (never its raw `%3|…|FAIL|rdkafka#…|` lines on standard error), the root
/// cause of a failure is shown where the user looks, libpq's messages stay on one line, and
/// `status` never presents figures nobody measured as 0.
@Suite("Library output end to end", .serialized)
struct LibraryOutputTests {
    /// librdkafka's own log format: `%<level>|<time>|<facility>|<client>| <message>`.
    static var rawKafkaLine: Regex<Substring> { /(?m)^%[0-7]\|/ }

    func write(_ yaml: String) throws -> String {
        let path = NSTemporaryDirectory() + "rr-libout-\(UUID().uuidString).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("check-config against an unresolvable broker and a closed Postgres port: one table line each, with the root causes, no raw library line")
    func checkConfigShowsRootCauses() throws {
        try TestEnvironment.requireBinary()
        let pgPort = try freeLoopbackPort()
        let path = try write("""
            kafka:
              brokers: "kafka.invalid:9092"
            regions:
              - name: eu-west-1
                dsn: "host=127.0.0.1 port=\(pgPort) dbname=app user=replicator connect_timeout=3"
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let (status, output) = try runReplicator(["check-config", "--config", path, "--timeout", "3"], timeout: .seconds(60))
        #expect(status == 69, "check-config exited \(status): \(output)")
        #expect(!output.contains(Self.rawKafkaLine), "a raw librdkafka line reached the output:\n\(output)")
        #expect(!output.contains("\t"), "a tab in the output:\n\(output)")
        let lines = output.split(separator: "\n").map(String.init)
        // Header, config, kafka, region: nothing else, every result on its own line.
        #expect(lines.count == 4, "expected 4 lines:\n\(output)")
        let kafka = try #require(lines.first { $0.hasPrefix("kafka ") }, "no kafka row:\n\(output)")
        #expect(kafka.contains("UNREACHABLE"), "\(kafka)")
        #expect(kafka.contains("Failed to resolve 'kafka.invalid:9092'"), "the kafka row lacks the root cause: \(kafka)")
        let region = try #require(lines.first { $0.hasPrefix("region eu-west-1") }, "no region row:\n\(output)")
        #expect(region.contains("UNREACHABLE") && region.contains("Connection refused"), "\(region)")
        // libpq's hint, which it writes on a second line indented by a tab, is on the same line.
        #expect(region.contains("; Is the server running"), "\(region)")
    }

    @Test("A daemon that never reached Kafka: status shows unknown lag, its log has no raw library line, SIGINT stops it with 0")
    func statusOfADaemonThatNeverReachedKafka() throws {
        try TestEnvironment.requireBinary()
        let kafkaPort = try freeLoopbackPort()  // nothing listens there
        let pgPort = try freeLoopbackPort()
        let httpPort = try freeLoopbackPort()
        let dir = NSTemporaryDirectory() + "rr-libout-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/config.yaml"
        try """
            kafka:
              brokers: "127.0.0.1:\(kafkaPort)"
            regions:
              - name: eu-west-1
                dsn: "host=127.0.0.1 port=\(pgPort) dbname=app user=replicator connect_timeout=2"
            http:
              listen: "127.0.0.1:\(httpPort)"
            log:
              level: info
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let daemon = try Daemon(["run", "--config", path], logPath: dir + "/daemon.log")
        defer { daemon.kill9() }
        try waitUntil("the daemon's /lag", timeout: .seconds(60)) {
            guard daemon.isRunning else { throw TestSetupError("the daemon exited:\n\(daemon.log)") }
            return (try? HTTPProbe.get(port: httpPort, "/lag").status) == 200
        }
        // Give librdkafka time to fail a few connections (it logs each refused one).
        try waitUntil("librdkafka to log a refused connection", timeout: .seconds(30)) {
            daemon.log.contains("librdkafka:") || daemon.log.contains(Self.rawKafkaLine)
        }

        let status = try runReplicator(["status", "--url", "http://127.0.0.1:\(httpPort)"])
        #expect(status.status == 0, "\(status.output)")
        let row = try #require(status.output.split(separator: "\n").first { $0.hasPrefix("eu-west-1 ") }, "\(status.output)")
        let cells = row.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        #expect(cells.count == 5 && cells[2] == "unknown" && cells[3] == "unknown" && cells[4] == "unknown",
                "a daemon that never reached Kafka must not show a lag: \(row)")

        daemon.signal(SIGINT)
        let exit = try daemon.wait(timeout: .seconds(45))
        #expect(exit == 0, "the daemon exited \(exit) on SIGINT:\n\(daemon.log)")
        let log = daemon.log
        #expect(!log.contains(Self.rawKafkaLine), "raw librdkafka lines in the daemon's output:\n\(log)")
        #expect(log.contains("SIGINT: draining"), "no line saying the daemon is stopping:\n\(log)")
    }
}
