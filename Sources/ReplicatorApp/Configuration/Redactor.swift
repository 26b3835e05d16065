import Foundation
import PostgresClient

/// Removes every secret the configuration holds (DSN passwords, whole DSNs, secret Kafka
/// properties) from text before it is printed: a second line of defence behind error types
/// that never include them in the first place.
struct Redactor: Sendable {
    private let secrets: [String]

    init(config: ReplicatorConfig) {
        var s: [String] = []
        for r in config.regions {
            s.append(r.dsn.value)
            if let parsed = try? PostgresConnection.parse(r.dsn.value), let pw = parsed["password"] { s.append(pw) }
        }
        for (k, v) in config.kafka.properties where ReplicatorConfig.Kafka.isSensitive(property: k) { s.append(v) }
        // Longest first, so a DSN is replaced whole before its password.
        secrets = s.filter { $0.count >= 3 }.sorted { $0.count > $1.count }
    }

    func callAsFunction(_ text: String) -> String {
        var out = text
        for s in secrets where out.contains(s) { out = out.replacingOccurrences(of: s, with: "<redacted>") }
        return out
    }
}
