internal import CRdKafka
import Synchronization

/// Where librdkafka's own log lines go.
///
/// librdkafka prints its log lines to standard error (`%3|1732…|FAIL|rdkafka#consumer-1| …`)
/// unless the client has a log callback. Every client this module creates has one: lines go to
/// the handler given to that client (``KafkaConsumer``'s `log:`), else to the process-wide
/// handler set here, else nowhere. The application sets the process-wide handler once, at
/// start-up, to its logger.
public enum KafkaLog {
    /// Receives one log line: (syslog level 0–7, librdkafka facility such as `FAIL`, message).
    /// Called on librdkafka's own threads: it must be thread-safe and must not block.
    public typealias Handler = @Sendable (_ level: Int32, _ facility: String, _ message: String) -> Void

    private static let processHandler = Mutex<Handler?>(nil)

    /// Sets (or with `nil` removes) the handler for clients that have none of their own.
    public static func setProcessHandler(_ handler: Handler?) {
        processHandler.withLock { $0 = handler }
    }

    /// A log message without librdkafka's thread prefix (`[thrd:host:9092/bootstrap]: `): the
    /// message names the broker itself.
    static func withoutThreadPrefix(_ message: String) -> String {
        guard message.hasPrefix("[thrd:"), let end = message.range(of: "]: ") else { return message }
        return String(message[end.upperBound...])
    }

    /// Passes a line to the process-wide handler, if any (from the log callback that
    /// ``KafkaConfiguration`` installs on every client configuration).
    static func emit(level: Int32, facility: String, message: String) {
        guard let handler = processHandler.withLock({ $0 }) else { return }
        handler(level, facility, withoutThreadPrefix(message))
    }

}
