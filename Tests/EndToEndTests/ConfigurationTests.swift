import Foundation
import Testing

/// The binary's answers to bad configuration and unreachable services (exit codes, messages,
/// and never a password in the output).
@Suite("Configuration errors end to end")
struct ConfigurationTests {
    func write(_ yaml: String) throws -> String {
        let path = NSTemporaryDirectory() + "rr-config-\(UUID().uuidString).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static let validRegion = """
        regions:
          - name: eu-west-1
            dsn: "host=127.0.0.1 port=1 dbname=app user=replicator"
        """

    @Test("Bad configuration files exit 78 naming the file and the key",
          arguments: [
            ("unknown key", "kafka:\n  topic: t\n  brokerz: x\n" + validRegion, "kafka.brokerz"),
            ("no regions", "kafka:\n  topic: t\n", "regions"),
            ("empty regions", "regions: []\n", "regions"),
            ("invalid YAML", "kafka: [unclosed\n" + validRegion, "line"),
            ("unsafe table name", validRegion + "\napply:\n  table: \"messages; DROP TABLE x\"\n", "apply.table"),
            ("nested unknown key", validRegion + "\n    port: 5432\n", "regions[0].port"),
            ("misspelt librdkafka property", "kafka:\n  properties:\n    sasl.pasword: x\n" + validRegion, "kafka.properties.sasl.pasword"),
            ("a SASL password in the file itself", "kafka:\n  properties:\n    sasl.password: x\n" + validRegion, "kafka.sasl_password_file"),
            ("a missing SASL password file", "kafka:\n  sasl_password_file: /nonexistent/kafka-sasl\n" + validRegion, "kafka.sasl_password_file"),
          ])
    func badConfigurationExits78(_ c: (name: String, yaml: String, key: String)) throws {
        try TestEnvironment.requireBinary()
        let path = try write(c.yaml)
        defer { try? FileManager.default.removeItem(atPath: path) }
        for command in ["check-config", "run", "migrate"] {
            let (status, output) = try runReplicator([command, "--config", path])
            #expect(status == 78, "\(c.name): `\(command)` exited \(status): \(output)")
            #expect(output.contains(path), "\(c.name): `\(command)` does not name the file: \(output)")
            #expect(output.contains(c.key), "\(c.name): `\(command)` does not name `\(c.key)`: \(output)")
        }
    }

    @Test("A missing configuration file exits 78 naming it")
    func missingFile() throws {
        try TestEnvironment.requireBinary()
        let (status, output) = try runReplicator(["check-config", "--config", "/nonexistent/rr.yaml"])
        #expect(status == 78)
        #expect(output.contains("/nonexistent/rr.yaml"))
    }

    @Test("An unreachable region with a password in its DSN: non-zero exit, the password appears nowhere")
    func unreachableRegionNeverPrintsPassword() throws {
        try TestEnvironment.requireBinary()
        let secret = "s3cr3t-Hunter2-\(UUID().uuidString.prefix(8))"
        let port = try freeLoopbackPort()
        let saslFile = NSTemporaryDirectory() + "rr-kafka-sasl-\(UUID().uuidString)"
        try "\(secret)-kafka\n".write(toFile: saslFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: saslFile) }
        let path = try write("""
            kafka:
              brokers: "127.0.0.1:\(port)"
              sasl_password_file: \(saslFile)
              properties:
                socket.timeout.ms: "2000"
            regions:
              - name: eu-west-1
                dsn: "host=127.0.0.1 port=\(port) dbname=app user=replicator password=\(secret) connect_timeout=2"
              - name: us-east-1
                dsn: "postgresql://replicator:\(secret)@127.0.0.1:\(port)/app?connect_timeout=2"
            """)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let check = try runReplicator(["check-config", "--config", path, "--timeout", "2"])
        #expect(check.status == 69, "check-config exited \(check.status): \(check.output)")
        #expect(check.output.contains("eu-west-1") && check.output.contains("UNREACHABLE"), "\(check.output)")
        let migrate = try runReplicator(["migrate", "--config", path])
        #expect(migrate.status != 0)
        for (name, out) in [("check-config", check.output), ("migrate", migrate.output)] {
            #expect(!out.contains(secret), "\(name) printed the password: \(out)")
        }
        // The daemon itself: it keeps retrying an unreachable region; its log must not leak either.
        let log = NSTemporaryDirectory() + "rr-daemon-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: log) }
        let daemon = try Daemon(["run", "--config", path], logPath: log, environment: ["REGION_REPLICATOR_LOG_LEVEL": "trace"])
        try waitUntil("the daemon to log a retry for the unreachable region") { daemon.log.contains("retrying") }
        daemon.signal(SIGTERM)
        try daemon.wait()
        #expect(!daemon.log.contains(secret), "the daemon log contains the password")
    }
}

/// A free TCP port on 127.0.0.1.
func freeLoopbackPort() throws -> Int { try HTTPProbe.freePort() }
