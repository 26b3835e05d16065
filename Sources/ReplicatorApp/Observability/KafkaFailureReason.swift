import Foundation
import KafkaClient

/// One line, in the configuration's terms, saying why a Kafka client could not reach its
/// brokers over TLS or SASL: from the lines librdkafka logged and the error it returned.
///
/// librdkafka's own lines carry OpenSSL error codes, connection states and, for every refused
/// broker certificate, the same hint to check `ssl.ca.location`; they stay in the debug log.
/// `nil` when the failure is none of the kinds below (the caller shows librdkafka's root cause).
enum KafkaFailureReason {
    typealias Line = (level: Int32, facility: String, message: String)

    static func reason(lines: [Line], error: String?) -> String? {
        // A refused broker certificate, in the words of our verification callback.
        for line in lines where line.facility == CertificateVerification.logFacility {
            if let marker = line.message.range(of: CertificateVerification.logMarker) {
                return "TLS: " + line.message[marker.upperBound...]
            }
        }
        // A file librdkafka could not load when the client was created.
        if let error, let property = failedFile(in: error) {
            switch property {
            case "ssl.key.location" where lines.contains(where: { $0.facility == "SSLPASSWD" }):
                return "TLS: the client key (ssl.key.location) is encrypted and no passphrase is configured (kafka.ssl_key_password_file)"
            case "ssl.key.location":
                return "TLS: cannot load the client key (ssl.key.location): not a private key, or a wrong passphrase in kafka.ssl_key_password_file"
            default:
                return "TLS: cannot load \(property) (missing, unreadable or not PEM)"
            }
        }
        for line in lines {
            // The broker ended the TLS handshake with an alert.
            if let alert = tlsAlert(in: line.message) {
                if alert == "certificate required" {
                    return "TLS: the broker requires a client certificate (ssl.certificate.location, ssl.key.location)"
                }
                return "TLS: the broker refused the handshake (TLS alert: \(alert))"
            }
            // The broker refused the SASL login (a wrong password, an unknown user, a mechanism it does not offer).
            if let marker = line.message.range(of: "SASL authentication error: ") {
                return "SASL: authentication failed: " + withoutState(String(line.message[marker.upperBound...]))
            }
        }
        return nil
    }

    /// `ssl.key.location` from librdkafka's `…: ssl.key.location failed: error:…`.
    static func failedFile(in text: String) -> String? {
        for property in ["ssl.key.location", "ssl.certificate.location", "ssl.ca.location", "ssl.crl.location", "ssl.keystore.location"]
        where text.contains(property + " failed") {
            return property
        }
        return nil
    }

    /// `certificate required` from OpenSSL's `…:tlsv13 alert certificate required: SSL alert number 116`.
    static func tlsAlert(in message: String) -> String? {
        guard let range = message.range(of: #"(sslv3|tlsv1|tlsv13) alert [a-z ]+"#, options: .regularExpression) else { return nil }
        let found = message[range]
        guard let alert = found.range(of: " alert ") else { return nil }
        return String(found[alert.upperBound...]).trimmingCharacters(in: .whitespaces)
    }

    /// Without librdkafka's ` (after 60ms in state AUTH_REQ)` suffix.
    static func withoutState(_ text: String) -> String {
        guard let range = text.range(of: #" \(after [0-9]+ms in state [A-Z_]+\)"#, options: .regularExpression) else { return text }
        return String(text[..<range.lowerBound])
    }
}
