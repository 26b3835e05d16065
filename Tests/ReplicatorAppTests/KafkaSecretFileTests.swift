import Foundation
@testable import ReplicatorApp
import Testing

/// Kafka's secrets (the SASL password, the client key's passphrase) come from files — systemd
/// credentials — named by `kafka.sasl_password_file` and `kafka.ssl_key_password_file`, never from
/// the configuration file itself.
@Suite("Kafka secrets from credential files")
struct KafkaSecretFileTests {
    static let region = "regions:\n  - name: eu-west-1\n    dsn: \"host=h dbname=d\"\n"

    func directory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("rr-kafka-secret-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func parse(_ yaml: String, env: [String: String], path: String = "/etc/region-replicator/config.yaml") throws(ConfigError) -> ReplicatorConfig {
        try ReplicatorConfig.parse(yaml: yaml, path: path, environment: env)
    }

    @Test("Both files are read from $CREDENTIALS_DIRECTORY into sasl.password and ssl.key.password, less the final line break, and stay redacted")
    func readFromCredentialsDirectory() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try " Sasl hunter2 \n".write(to: dir.appendingPathComponent("region-replicator_kafka-sasl"), atomically: true, encoding: .utf8)
        try "KeyPass-hunter2\r\n".write(to: dir.appendingPathComponent("region-replicator_kafka-key"), atomically: true, encoding: .utf8)
        let config = try parse("""
            kafka:
              sasl_password_file: region-replicator_kafka-sasl
              ssl_key_password_file: region-replicator_kafka-key
              properties:
                security.protocol: SASL_SSL
                sasl.username: region-replicator
            \(Self.region)
            """, env: ["CREDENTIALS_DIRECTORY": dir.path])
        // Inner spaces and a leading one are the password's own; only the line break goes.
        #expect(config.kafka.properties["sasl.password"] == " Sasl hunter2 ")
        #expect(config.kafka.properties["ssl.key.password"] == "KeyPass-hunter2")
        #expect(config.kafkaConfiguration.properties.contains { $0 == ("sasl.password", " Sasl hunter2 ") })
        #expect(!"\(config)".contains("hunter2") && !"\(config.kafka)".contains("hunter2"))
        let redact = Redactor(config: config)
        #expect(redact("login with KeyPass-hunter2 failed") == "login with <redacted> failed")
    }

    @Test("Without $CREDENTIALS_DIRECTORY a relative name is resolved against the configuration file's directory; an absolute path is used as is")
    func relativeAndAbsolute() throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "relative-hunter2".write(to: dir.appendingPathComponent("sasl"), atomically: true, encoding: .utf8)
        let absolute = dir.appendingPathComponent("key").path
        try "absolute-hunter2\n".write(toFile: absolute, atomically: true, encoding: .utf8)
        let config = try parse("kafka:\n  sasl_password_file: sasl\n  ssl_key_password_file: \(absolute)\n" + Self.region,
                               env: [:], path: dir.appendingPathComponent("config.yaml").path)
        #expect(config.kafka.properties["sasl.password"] == "relative-hunter2")
        #expect(config.kafka.properties["ssl.key.password"] == "absolute-hunter2")
    }

    @Test("sasl.password or ssl.key.password in kafka.properties is refused (exit 78 in every command), naming the key to use, never the value",
          arguments: [("sasl.password", "kafka.sasl_password_file"), ("ssl.key.password", "kafka.ssl_key_password_file")])
    func inlineSecretIsRefused(_ property: String, _ fileKey: String) {
        let yaml = "kafka:\n  properties:\n    \(property): \"hunter2-inline\"\n" + Self.region
        do {
            _ = try parse(yaml, env: [:])
            Issue.record("\(property) in the configuration file was accepted")
        } catch {
            #expect(error.key == "kafka.properties.\(property)")
            #expect(error.description.contains(fileKey), "\(error)")
            #expect(!error.description.contains("hunter2"), "\(error)")
        }
    }

    @Test("A missing, empty, NUL-holding or non-UTF-8 file names the key and the path, never the content",
          arguments: [("missing", nil, "No such file"), ("empty", Data(), "is empty; expected a password"),
                      ("newline", Data("\n".utf8), "is empty; expected a password"),
                      ("nul", Data("hunter2\0x".utf8), "contains a NUL byte"), ("latin1", Data([0x68, 0xE9, 0x32]), "not valid UTF-8")])
    func badFile(_ name: String, _ content: Data?, _ why: String) throws {
        let dir = try directory()
        defer { try? FileManager.default.removeItem(at: dir) }
        if let content { try content.write(to: dir.appendingPathComponent(name)) }
        do {
            _ = try parse("kafka:\n  sasl_password_file: \(name)\n" + Self.region, env: ["CREDENTIALS_DIRECTORY": dir.path])
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.key == "kafka.sasl_password_file")
            #expect(error.message.contains(dir.appendingPathComponent(name).path) && error.message.contains(why), "\(error)")
            #expect(!error.description.contains("hunter2"), "\(error)")
        }
    }
}
