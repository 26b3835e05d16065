public import Logging

extension Logger.Level {
    /// The level of a syslog severity (0 emergency … 7 debug), e.g. of a librdkafka log line.
    public init(syslog severity: Int32) {
        switch severity {
        case ...2: self = .critical
        case 3: self = .error
        case 4: self = .warning
        case 5: self = .notice
        case 6: self = .info
        default: self = .debug
        }
    }
}
