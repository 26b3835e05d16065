internal import CRdKafka

/// Says why a broker's certificate was refused.
///
/// When OpenSSL refuses a broker's certificate, librdkafka (2.0 to 2.16 at least) logs the same
/// line whatever the reason — `certificate verify failed: broker certificate could not be
/// verified, verify that ssl.ca.location is correctly configured…` — also for an expired
/// certificate or one issued for another host. The verification callback installed here sees
/// OpenSSL's own verification result for each certificate of the chain; it keeps OpenSSL's
/// decision unchanged (a certificate is accepted exactly when OpenSSL found no error) and, on a
/// refusal, gives librdkafka a reason in words, which librdkafka logs at error level with
/// facility ``logFacility``:
/// `Certificate (subject=…, issuer=…) verification callback failed: <reason>`.
public enum CertificateVerification {
    /// The facility of librdkafka's log line that carries the reason.
    public static let logFacility = "SSLCERTVRFY"
    /// What precedes the reason in that line.
    public static let logMarker = "verification callback failed: "

    /// Installs the callback on `conf` when certificate verification is on
    /// (`enable.ssl.certificate.verification`, true by default). With verification off OpenSSL
    /// still evaluates the chain, and a refusal reported then would be an error logged for a
    /// connection that goes ahead.
    static func install(on conf: OpaquePointer) {
        var value = [CChar](repeating: 0, count: 16)
        var size = value.count
        guard rd_kafka_conf_get(conf, "enable.ssl.certificate.verification", &value, &size) == RD_KAFKA_CONF_OK,
              String(errorBuffer: value) == "true" else { return }
        _ = rd_kafka_conf_set_ssl_cert_verify_cb(conf) { _, brokerName, _, x509Error, depth, _, _, errstr, errstrSize, _ in
            guard let x509Error, x509Error.pointee != 0 else { return 1 }
            let broker = brokerName.map { String(cString: $0) } ?? ""
            let text = CertificateVerification.reason(x509Error: x509Error.pointee, depth: depth, broker: broker)
            if let errstr, errstrSize > 0 {
                let bytes = Array(text.utf8.prefix(errstrSize - 1))
                for (i, byte) in bytes.enumerated() { errstr[i] = CChar(bitPattern: byte) }
                errstr[bytes.count] = 0
            }
            return 0
        }
    }

    /// The reason for OpenSSL's verification error `x509Error` (an `X509_V_ERR_*` code) on the
    /// certificate at `depth` of the chain (0: the broker's own) presented by `broker`
    /// (`host:port`). One line, no OpenSSL jargon beyond the code of an uncommon error.
    public static func reason(x509Error: Int32, depth: Int32, broker: String) -> String {
        let whose = depth == 0 ? "the broker's certificate" : "a CA certificate in the broker's chain"
        let host = broker.lastIndex(of: ":").map { String(broker[..<$0]) } ?? broker
        let problem: String
        switch x509Error {
        // UNABLE_TO_GET_ISSUER_CERT, CERT_SIGNATURE_FAILURE, DEPTH_ZERO_SELF_SIGNED_CERT,
        // SELF_SIGNED_CERT_IN_CHAIN, UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
        // UNABLE_TO_VERIFY_LEAF_SIGNATURE, INVALID_CA, CERT_UNTRUSTED, CERT_REJECTED
        case 2, 7, 18, 19, 20, 21, 24, 27, 28:
            problem = "the broker's certificate is not signed by a CA this client trusts (ssl.ca.location)"
        case 9: problem = "\(whose) is not valid yet (check the clocks)"  // CERT_NOT_YET_VALID
        case 10: problem = "\(whose) has expired"  // CERT_HAS_EXPIRED
        case 23: problem = "\(whose) has been revoked"  // CERT_REVOKED
        case 62, 64:  // HOSTNAME_MISMATCH, IP_ADDRESS_MISMATCH
            problem = "the broker's certificate is not issued for \(host) (none of its names matches the broker's address)"
        default: problem = "\(whose) was refused (OpenSSL verification error \(x509Error))"
        }
        return broker.isEmpty ? problem : "\(problem); broker \(broker)"
    }
}
