import KafkaClient
import Logging
import ReplicationCore
import Synchronization

/// librdkafka's log lines, through swift-log: never librdkafka's own raw `%3|…|FAIL|…` lines on
/// standard error.
enum LibraryLogging {
    /// Routes the lines of every Kafka client that has no handler of its own to `logger`, at the
    /// level matching their syslog level, at most `cap` (a command-line tool passes `.debug`:
    /// there the lines are diagnostics, and its own output says what failed). `redact` runs over
    /// every line.
    static func routeKafka(to logger: Logger, cap: Logger.Level? = nil, redact: @escaping @Sendable (String) -> String = { $0 }) {
        KafkaLog.setProcessHandler { level, facility, message in
            var logLevel = Logger.Level(syslog: level)
            if let cap, logLevel > cap { logLevel = cap }
            logger.log(level: logLevel, "librdkafka: \(redact(message))", metadata: ["facility": "\(facility)"])
        }
    }
}

/// The error lines one Kafka client logged, kept to explain a failure whose error code alone
/// says little: a metadata request fails with `Local: Broker transport failure`, while the line
/// librdkafka logged says `Failed to resolve 'kafka.invalid:9092': Name or service not known`.
final class KafkaErrorTrail: Sendable {
    private let lines = Mutex<[KafkaFailureReason.Line]>([])

    /// Keeps `message` if it is an error (syslog level 3 or more severe), or librdkafka's
    /// warning that an encrypted key has no passphrase; at most 20, no repeats.
    func record(level: Int32, facility: String, message: String) {
        guard level <= 3 || facility == "SSLPASSWD" else { return }
        lines.withLock { lines in
            guard lines.count < 20, !lines.contains(where: { $0.message == message }) else { return }
            lines.append((level, facility, message))
        }
    }

    /// The root cause: the first connection failure (facility `FAIL`) logged, else the first
    /// error line; `nil` when none was logged.
    var rootCause: String? {
        lines.withLock { lines in
            let errors = lines.filter { $0.level <= 3 }
            return (errors.first { $0.facility == "FAIL" } ?? errors.first)?.message
        }
    }

    /// The cause in the configuration's terms when it is a TLS or SASL problem
    /// (``KafkaFailureReason``), given the error the client returned.
    func reason(for error: any Error) -> String? {
        KafkaFailureReason.reason(lines: lines.withLock { $0 }, error: "\(error)")
    }
}
