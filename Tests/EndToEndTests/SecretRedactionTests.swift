import Foundation
import Testing

/// Secrets (DSN passwords, a `dsn_file` read from systemd's `$CREDENTIALS_DIRECTORY`, SASL and
/// TLS properties of librdkafka) never appear in anything the program prints or serves.
@Suite("Secrets are never printed or served", .serialized)
struct SecretRedactionTests {
    @Test("Every secret is absent from the daemon's logs (trace, text and json), every HTTP body, and the output of check-config, migrate, status, replay and dead-letters")
    func secretsAppearNowhere() throws {
        let tag = UUID().uuidString.prefix(8)
        let secrets = [
            "dsn": "DsnPw-\(tag)", "credential": "CredPw-\(tag)", "down": "DownPw-\(tag)",
            "sasl": "SaslPw-\(tag)", "tls": "TlsKeyPw-\(tag)",
        ]
        let dbs = try RegionDatabases(regions: ["us-east-1", "eu-west-1"])
        defer { dbs.drop() }
        let cluster = try TestCluster()
        let dir = NSTemporaryDirectory() + "rr-secrets-" + UUID().uuidString
        let credentials = dir + "/credentials"
        try FileManager.default.createDirectory(atPath: credentials, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = dbs.server("eu-west-1")
        // Trust authentication ignores the passwords, so the two regions really work.
        try "postgresql://postgres:\(secrets["credential"]!)@127.0.0.1:\(server.port)/\(dbs.database)?connect_timeout=5\n"
            .write(toFile: credentials + "/eu-west-1", atomically: true, encoding: .utf8)
        // Kafka's secrets come from credentials too.
        try (secrets["sasl"]! + "\n").write(toFile: credentials + "/kafka-sasl-password", atomically: true, encoding: .utf8)
        try (secrets["tls"]! + "\n").write(toFile: credentials + "/kafka-key-password", atomically: true, encoding: .utf8)
        let closedPort = try freeLoopbackPort()
        let httpPort = try freeLoopbackPort()
        let config = dir + "/config.yaml"
        try """
            kafka:
              brokers: "\(cluster.bootstrap)"
              topic: \(cluster.topic)
              group_prefix: rr-secrets
              sasl_password_file: kafka-sasl-password
              ssl_key_password_file: kafka-key-password
              properties:
                log_level: "7"
                sasl.username: region-replicator
            regions:
              - name: us-east-1
                dsn: "\(dbs.conninfo("us-east-1")) password=\(secrets["dsn"]!)"
              - name: eu-west-1
                dsn_file: eu-west-1
              - name: ap-southeast-1
                dsn: "host=127.0.0.1 port=\(closedPort) dbname=app user=replicator password=\(secrets["down"]!) connect_timeout=2"
            apply:
              connections: 1
              max_batch_delay_ms: 20
            http:
              listen: "127.0.0.1:\(httpPort)"
            log:
              level: trace
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let env = ["CREDENTIALS_DIRECTORY": credentials]
        var outputs: [(String, String)] = []
        func command(_ args: [String]) throws -> (status: Int32, output: String) {
            let r = try runReplicator(args + ["--config", config], environment: env)
            outputs.append((args.joined(separator: " "), r.output))
            return r
        }

        for region in ["us-east-1", "eu-west-1"] {
            #expect(try command(["migrate", "--region", region]).status == 0)
        }
        #expect(try command(["migrate"]).status == 69)
        let check = try command(["check-config"])
        #expect(check.status == 69 && check.output.contains("UNREACHABLE"), "\(check.output)")
        #expect(try command(["replay", "--region", "ap-southeast-1", "--from-offset", "0"]).status == 69)
        #expect(try command(["dead-letters", "list", "--region", "ap-southeast-1"]).status == 69)

        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: 71)
        w.generate(sessions: 5, messages: 100)
        try cluster.produce(w.events)
        try cluster.produceRaw(key: "poison", value: Array("not json".utf8))
        try cluster.producer.flush(timeoutMs: 30_000)

        for format in ["text", "json"] {
            let daemon = try Daemon(["run", "--config", config], logPath: dir + "/daemon-\(format).log",
                                    environment: env.merging(["REGION_REPLICATOR_LOG_FORMAT": format]) { $1 })
            defer { daemon.kill9() }
            let endpoint = DaemonEndpoint(port: httpPort)
            try waitUntil("both reachable regions to apply and the down one to be reported", timeout: .seconds(60)) {
                let ready = try endpoint.get("/health/ready")
                let regions = try ready.json()["regions"] as? [String: String] ?? [:]
                return regions["us-east-1"] == "ok" && regions["eu-west-1"] == "ok"
                    && (regions["ap-southeast-1"] ?? "ok") != "ok" && daemon.log.contains("retrying")
            }
            try waitUntil("the poison record to be dead-lettered in us-east-1") {
                try dbs.query("us-east-1", "SELECT count(*) FROM replicator_dead_letters").first?[0] == "1"
            }
            for path in ["/lag", "/health/ready", "/health/deep", "/health/live", "/metrics", "/nope"] {
                outputs.append(("GET \(path) (\(format))", try endpoint.get(path).text))
            }
            outputs.append(("POST /lag (\(format))", try endpoint.get("/lag", method: "POST").text))
            let status = try command(["status"])
            #expect(status.status == 0 && status.output.contains("ap-southeast-1"), "\(status.output)")
            _ = try command(["status", "--json"])
            _ = try command(["dead-letters", "list", "--region", "us-east-1"])
            daemon.signal(SIGHUP)  // re-reads the file (and the credential), logging what it does
            try waitUntil("the daemon to log the SIGHUP") { daemon.log.contains("SIGHUP") }
            daemon.signal(SIGTERM)
            #expect(try daemon.wait() == 0)
            #expect(daemon.log.contains("ap-southeast-1"), "the log says nothing about the down region")
            outputs.append(("daemon log (\(format))", daemon.log))
        }

        for (name, secret) in secrets {
            for (what, text) in outputs {
                #expect(!text.contains(secret), "the \(name) secret appears in \(what)")
            }
        }
    }
}
