internal import CRdKafka

/// An error from librdkafka or from this wrapper.
///
/// `code` is librdkafka's `rd_kafka_resp_err_t` (negative values are client-side errors,
/// positive ones are broker error codes). The description never contains property values,
/// so SASL passwords cannot leak through it.
public struct KafkaError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let rawValue: Int32
        public init(rawValue: Int32) { self.rawValue = rawValue }

        /// A configuration property is unknown to librdkafka or its value is invalid.
        public static let invalidConfiguration = Code(rawValue: -186)  // RD_KAFKA_RESP_ERR__INVALID_ARG
        /// The operation timed out.
        public static let timedOut = Code(rawValue: -185)  // RD_KAFKA_RESP_ERR__TIMED_OUT
        /// The topic does not exist.
        public static let unknownTopic = Code(rawValue: 3)  // RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
        /// Another consumer joined the group with the same `group.instance.id` (static membership).
        public static let fencedInstanceID = Code(rawValue: 82)  // RD_KAFKA_RESP_ERR_FENCED_INSTANCE_ID

        public var description: String {
            String(cString: rd_kafka_err2name(rd_kafka_resp_err_t(rawValue: rawValue)))
        }
    }

    public var code: Code
    public var message: String
    /// librdkafka says retrying the same operation may succeed.
    public var isRetriable: Bool
    public var file: String
    public var line: Int

    public init(code: Code, message: String, isRetriable: Bool = false, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.isRetriable = isRetriable
        self.file = file
        self.line = line
    }

    init(_ err: rd_kafka_resp_err_t, context: String, file: String = #fileID, line: Int = #line) {
        let text = String(cString: rd_kafka_err2str(err))
        self.init(code: Code(rawValue: err.rawValue), message: "\(context): \(text)",
                  isRetriable: err == RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR__TRANSPORT
                      || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN,
                  file: file, line: line)
    }

    /// Wraps (and destroys) an `rd_kafka_error_t`.
    init(consuming error: OpaquePointer, context: String, file: String = #fileID, line: Int = #line) {
        let code = rd_kafka_error_code(error)
        let text = String(cString: rd_kafka_error_string(error))
        let retriable = rd_kafka_error_is_retriable(error) != 0
        rd_kafka_error_destroy(error)
        self.init(code: Code(rawValue: code.rawValue), message: "\(context): \(text)", isRetriable: retriable,
                  file: file, line: line)
    }

    public var description: String { "Kafka error \(code): \(message)" }
}

extension String {
    /// Reads a NUL-terminated C error buffer.
    init(errorBuffer buffer: [CChar]) {
        self = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}
