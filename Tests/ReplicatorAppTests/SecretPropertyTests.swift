import Foundation
import Testing

@testable import ReplicatorApp

/// One list decides which Kafka property values are secret: the configuration's descriptions,
/// its dump and the redactor of everything printed agree, and the documentation names it.
@Suite("SecretPropertyTests")
struct SecretPropertyTests {
    static let secretProperties = [
        "sasl.password", "sasl.oauthbearer.config", "sasl.oauthbearer.client.secret", "ssl.key.password",
        "ssl.key.pem", "ssl.keystore.password", "sasl.jaas.config", "sasl.oauthbearer.token.endpoint.url",
    ]
    static let plainProperties = ["security.protocol", "sasl.mechanisms", "ssl.key.location", "ssl.ca.location", "client.id"]

    func config() throws -> ReplicatorConfig {
        var config = try ReplicatorConfig.parse(yaml: """
            regions:
              - name: eu-west-1
                dsn: "host=eu dbname=app"
            """, path: "/etc/region-replicator/config.yaml", environment: [:])
        for (i, name) in (Self.secretProperties + Self.plainProperties).enumerated() {
            config.kafka.properties[name] = "value-\(i)-of-\(name.replacingOccurrences(of: ".", with: "-"))"
        }
        return config
    }

    @Test("every secret-looking property is hidden by the description, the dump and the redactor alike")
    func oneListEverywhere() throws {
        let config = try config()
        let redact = Redactor(config: config)
        var dumped = ""
        dump(config.kafka, to: &dumped)
        for (name, value) in config.kafka.properties {
            let secret = Self.secretProperties.contains(name)
            #expect(ReplicatorConfig.Kafka.isSensitive(property: name) == secret, "\(name)")
            #expect(config.description.contains(value) == !secret, "description and \(name)")
            #expect(dumped.contains(value) == !secret, "dump and \(name)")
            #expect(redact("x \(value) y").contains(value) == !secret, "redactor and \(name)")
        }
    }

    @Test("docs/configuration.md names every marker of the secret list")
    func documented() throws {
        let text = try DocsTests.read("docs/configuration.md")
        for marker in ReplicatorConfig.Kafka.sensitivePropertyMarkers {
            #expect(text.contains("`\(marker)`"), "docs/configuration.md does not name `\(marker)`")
        }
    }
}
