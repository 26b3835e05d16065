internal import CRdKafka

/// librdkafka configuration properties, applied verbatim and validated one by one.
///
/// Property values may hold secrets (`sasl.password`, `ssl.key.password`): they are never
/// included in an error message, only the property name is.
public struct KafkaConfiguration: Sendable {
    /// Properties in the order they are applied (later entries win).
    public private(set) var properties: [(String, String)] = []

    public init(_ properties: [(String, String)] = []) { self.properties = properties }

    public mutating func set(_ name: String, _ value: String) { properties.append((name, value)) }

    /// Builds an `rd_kafka_conf_t`, validating every property.
    /// - Throws: ``KafkaError`` with code ``KafkaError/Code/invalidConfiguration`` naming the property.
    func makeConf() throws(KafkaError) -> OpaquePointer {
        guard let conf = rd_kafka_conf_new() else {
            throw KafkaError(code: .invalidConfiguration, message: "rd_kafka_conf_new failed")
        }
        // Never librdkafka's default of printing to standard error: see KafkaLog.
        rd_kafka_conf_set_log_cb(conf) { _, level, fac, buf in
            KafkaLog.emit(level: level, facility: fac.map { String(cString: $0) } ?? "",
                          message: buf.map { String(cString: $0) } ?? "")
        }
        var errbuf = [CChar](repeating: 0, count: 512)
        for (name, value) in properties {
            let res = rd_kafka_conf_set(conf, name, value, &errbuf, errbuf.count)
            if res != RD_KAFKA_CONF_OK {
                rd_kafka_conf_destroy(conf)
                let why = res == RD_KAFKA_CONF_UNKNOWN ? "unknown property" : "invalid value"
                // librdkafka's errstr may quote the value; it is dropped on purpose (secrets).
                throw KafkaError(code: .invalidConfiguration, message: "property \"\(name)\": \(why)")
            }
        }
        // A refused broker certificate is logged with the reason (expired, wrong host, unknown CA).
        CertificateVerification.install(on: conf)
        return conf
    }

    /// Validates the properties without creating a client.
    public func validate() throws(KafkaError) {
        let conf = try makeConf()
        rd_kafka_conf_destroy(conf)
    }
}
