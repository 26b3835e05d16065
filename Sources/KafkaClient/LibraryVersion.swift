internal import CRdKafka

/// The librdkafka this process runs with (`rd_kafka_version_str()`), e.g. "2.0.2".
public func librdkafkaRuntimeVersion() -> String {
    String(cString: rd_kafka_version_str())
}

/// The librdkafka headers this module was compiled against (`RD_KAFKA_VERSION`), e.g. "2.0.2".
public func librdkafkaBuildVersion() -> String {
    let v = UInt32(bitPattern: Int32(truncatingIfNeeded: RD_KAFKA_VERSION))
    return "\((v >> 24) & 0xff).\((v >> 16) & 0xff).\((v >> 8) & 0xff)"
}
