import KafkaClient
@testable import ReplicatorApp
import Testing

/// The one-line reasons check-config shows for TLS and SASL failures, from librdkafka's lines as
/// librdkafka 2.0.2 and 2.16 log them (recorded from real runs against a TLS-only broker).
@Suite("Kafka failure reasons")
struct KafkaFailureReasonTests {
    static let verifyFailed = (Int32(3), "FAIL", "ssl://127.0.0.1:41643/bootstrap: SSL handshake failed: error:0A000086:SSL routines::certificate verify failed: broker certificate could not be verified, verify that ssl.ca.location is correctly configured or root CA certificates are installed (install ca-certificates package) (after 6ms in state SSL_HANDSHAKE)")

    @Test("OpenSSL's verification errors in words: wrong CA, expired, wrong host, not yet valid, others with their code",
          arguments: [(Int32(20), Int32(0), "the broker's certificate is not signed by a CA this client trusts (ssl.ca.location); broker 127.0.0.1:9093"),
                      (21, 0, "the broker's certificate is not signed by a CA this client trusts (ssl.ca.location); broker 127.0.0.1:9093"),
                      (18, 0, "the broker's certificate is not signed by a CA this client trusts (ssl.ca.location); broker 127.0.0.1:9093"),
                      (10, 0, "the broker's certificate has expired; broker 127.0.0.1:9093"),
                      (10, 1, "a CA certificate in the broker's chain has expired; broker 127.0.0.1:9093"),
                      (9, 0, "the broker's certificate is not valid yet (check the clocks); broker 127.0.0.1:9093"),
                      (62, 0, "the broker's certificate is not issued for 127.0.0.1 (none of its names matches the broker's address); broker 127.0.0.1:9093"),
                      (64, 0, "the broker's certificate is not issued for 127.0.0.1 (none of its names matches the broker's address); broker 127.0.0.1:9093"),
                      (26, 0, "the broker's certificate was refused (OpenSSL verification error 26); broker 127.0.0.1:9093")])
    func certificateReasons(_ code: Int32, _ depth: Int32, _ expected: String) {
        #expect(CertificateVerification.reason(x509Error: code, depth: depth, broker: "127.0.0.1:9093") == expected)
    }

    @Test("A certificate refusal: our callback's reason wins over librdkafka's generic verify-failed line")
    func certificateRefusal() {
        let lines: [KafkaFailureReason.Line] = [
            (3, "SSLCERTVRFY", "ssl://127.0.0.1:41643/bootstrap: Certificate (subject=/CN=127.0.0.1, issuer=/CN=test ca) verification callback failed: the broker's certificate has expired; broker 127.0.0.1:41643"),
            Self.verifyFailed,
        ]
        #expect(KafkaFailureReason.reason(lines: lines, error: "Kafka error _TRANSPORT: metadata for t: Local: Broker transport failure")
                == "TLS: the broker's certificate has expired; broker 127.0.0.1:41643")
    }

    @Test("A client certificate the broker requires, or refuses")
    func brokerAlerts() {
        let required: KafkaFailureReason.Line = (3, "FAIL", "ssl://127.0.0.1:39853/bootstrap: Receive failed: error:0A00045C:SSL routines::tlsv13 alert certificate required: SSL alert number 116 (after 0ms in state APIVERSION_QUERY)")
        #expect(KafkaFailureReason.reason(lines: [required], error: nil)
                == "TLS: the broker requires a client certificate (ssl.certificate.location, ssl.key.location)")
        let unknownCA: KafkaFailureReason.Line = (3, "FAIL", "ssl://127.0.0.1:39853/bootstrap: SSL handshake failed: error:0A000418:SSL routines::tlsv1 alert unknown ca: SSL alert number 48 (after 2ms in state SSL_HANDSHAKE)")
        #expect(KafkaFailureReason.reason(lines: [unknownCA], error: nil) == "TLS: the broker refused the handshake (TLS alert: unknown ca)")
    }

    @Test("A refused SASL login: the mechanism's own words, without librdkafka's connection state")
    func saslRefused() {
        let line: KafkaFailureReason.Line = (3, "FAIL", "sasl_ssl://127.0.0.1:39665/bootstrap: SASL authentication error: SASL SCRAM authentication failed: broker responded with unknown-user (after 60ms in state AUTH_REQ)")
        #expect(KafkaFailureReason.reason(lines: [line], error: nil)
                == "SASL: authentication failed: SASL SCRAM authentication failed: broker responded with unknown-user")
    }

    @Test("A client key that cannot be loaded: encrypted without a passphrase, or a wrong one")
    func clientKey() {
        let error = "Kafka error _INVALID_ARG: cannot create consumer: ssl.key.location failed: error:0A080009:SSL routines::PEM lib"
        let noPassphrase: [KafkaFailureReason.Line] = [
            (4, "SSLPASSWD", "Private key requires password but no password configured (ssl.key.password)"),
            (3, "SSL", "error:07880109:common libcrypto routines::interrupted or cancelled"),
        ]
        #expect(KafkaFailureReason.reason(lines: noPassphrase, error: error)
                == "TLS: the client key (ssl.key.location) is encrypted and no passphrase is configured (kafka.ssl_key_password_file)")
        #expect(KafkaFailureReason.reason(lines: [(3, "SSL", "error:1C800064:Provider routines::bad decrypt")], error: error)
                == "TLS: cannot load the client key (ssl.key.location): not a private key, or a wrong passphrase in kafka.ssl_key_password_file")
        #expect(KafkaFailureReason.reason(lines: [], error: "cannot create consumer: ssl.ca.location failed: error:80000002:system library::No such file or directory")
                == "TLS: cannot load ssl.ca.location (missing, unreadable or not PEM)")
    }

    @Test("Anything else is left to librdkafka's own root cause")
    func otherFailures() {
        let resolve: KafkaFailureReason.Line = (3, "FAIL", "kafka.invalid:9092/bootstrap: Failed to resolve 'kafka.invalid:9092': Name or service not known (after 2ms in state CONNECT)")
        #expect(KafkaFailureReason.reason(lines: [resolve], error: "Kafka error _TRANSPORT: …") == nil)
        // librdkafka's generic verify-failed line alone (no reason from our callback) is not guessed at.
        #expect(KafkaFailureReason.reason(lines: [Self.verifyFailed], error: nil) == nil)
    }
}
