import Foundation
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Log output on standard error, fit for journald and for files alike.
///
/// - `text`: one line per event, `key=value` metadata (values with spaces quoted). Under
///   journald (`JOURNAL_STREAM` names our standard error) a line is `<N>level message k=v…`
///   with the syslog priority prefix of `sd-daemon.h` and no timestamp of its own (journald
///   stamps every entry); elsewhere `2026-11-24T10:00:00.123Z level message k=v…`.
/// - `json`: one JSON object per line, `{"ts","level","priority","label","message", metadata…}`;
///   under journald the line also gets the `<N>` prefix, which journald strips, so every
///   journal entry's `MESSAGE` is that JSON object and its `PRIORITY` is right.
///
/// The level is process-wide and can change at run time (``setLevel(_:)``, used on SIGHUP):
/// every handler reads it on each event.
public enum LoggingSetup {
    /// The label of the daemon's own loggers; lines from other labels carry `[label]`.
    public static let label = "region-replicator"

    private static let levelIndex = Atomic<Int>(index(of: .info))

    /// The process-wide log level.
    public static var currentLevel: Logger.Level { Logger.Level.allCases[levelIndex.load(ordering: .relaxed)] }

    /// Changes the process-wide log level of every logger at once (thread-safe).
    public static func setLevel(_ level: Logger.Level) {
        levelIndex.store(index(of: level), ordering: .relaxed)
    }

    /// Bootstraps swift-log once for the process: handlers write to standard error in `format`,
    /// in the journald style when standard error is connected to the journal.
    public static func bootstrap(level: Logger.Level, format: ReplicatorConfig.LogFormat) {
        setLevel(level)
        let output = FileDescriptorLogOutput(fd: STDERR_FILENO)
        let journal = isJournalStream(ProcessInfo.processInfo.environment["JOURNAL_STREAM"], fd: STDERR_FILENO)
        LoggingSystem.bootstrap { label in
            makeHandler(label: label, format: format, journal: journal, output: output)
        }
    }

    static func makeHandler(label: String, format: ReplicatorConfig.LogFormat, journal: Bool,
                            output: any LogOutput) -> any LogHandler {
        switch format {
        case .text: TextLogHandler(label: label, journal: journal, output: output)
        case .json: JSONLogHandler(label: label, journal: journal, output: output)
        }
    }

    /// Whether `fd` is the journal stream that `JOURNAL_STREAM` (`<device>:<inode>`) names.
    ///
    /// Comparing device and inode, as systemd.exec(5) advises, keeps a child process whose
    /// output was redirected elsewhere (it inherits the variable) from writing the prefixes.
    static func isJournalStream(_ value: String?, fd: Int32) -> Bool {
        guard let value else { return false }
        let parts = value.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let device = UInt64(parts[0]), let inode = UInt64(parts[1]) else { return false }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return false }
        return UInt64(st.st_dev) == device && UInt64(st.st_ino) == inode
    }

    /// The syslog priority of a level (`sd-daemon.h`: `SD_DEBUG` 7 … `SD_CRIT` 2).
    static func syslogPriority(_ level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7
        case .info: 6
        case .notice: 5
        case .warning: 4
        case .error: 3
        case .critical: 2
        }
    }

    private static func index(of level: Logger.Level) -> Int { Logger.Level.allCases.firstIndex(of: level)! }

    /// `2026-11-24T10:00:00.123Z` for the current time (UTC, milliseconds).
    static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var seconds = now.tv_sec
        var t = tm()
        gmtime_r(&seconds, &t)
        func pad(_ v: Int, _ width: Int) -> String {
            let s = String(v)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return pad(Int(t.tm_year) + 1900, 4) + "-" + pad(Int(t.tm_mon) + 1, 2) + "-" + pad(Int(t.tm_mday), 2) + "T"
            + pad(Int(t.tm_hour), 2) + ":" + pad(Int(t.tm_min), 2) + ":" + pad(Int(t.tm_sec), 2) + "."
            + pad(now.tv_nsec / 1_000_000, 3) + "Z"
    }
}

// MARK: - Output

/// Where log lines go. Each call writes one complete line.
protocol LogOutput: Sendable {
    func write(_ line: String)
}

/// Writes lines to a file descriptor with `write(2)`, one line at a time (lines from several
/// threads never interleave), unbuffered, so nothing is lost when the process exits at once.
final class FileDescriptorLogOutput: LogOutput {
    let fd: Int32
    private let lock = Mutex(())

    init(fd: Int32) { self.fd = fd }

    func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        lock.withLock { _ in
            bytes.withUnsafeBytes { buffer in
                var offset = 0
                while offset < buffer.count {
                    let n = systemWrite(fd, buffer.baseAddress! + offset, buffer.count - offset)
                    if n > 0 { offset += n } else if n < 0 && errno == EINTR { continue } else { return }
                }
            }
        }
    }
}

/// `write(2)` (the class's own `write` hides the C function's name inside it).
private func systemWrite(_ fd: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int { write(fd, bytes, count) }

// MARK: - Handlers

/// The parts both handlers share: metadata, and a level that follows ``LoggingSetup/currentLevel``
/// unless someone sets this logger's own level.
protocol ReplicatorLogHandler: LogHandler {
    var pinnedLevel: Logger.Level? { get set }
}

extension ReplicatorLogHandler {
    var logLevel: Logger.Level {
        get { pinnedLevel ?? LoggingSetup.currentLevel }
        set { pinnedLevel = newValue }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Handler metadata, then the provider's, then the event's (later wins); plus `error`.
    func mergedMetadata(_ event: LogEvent) -> Logger.Metadata {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        if let error = event.error, merged["error"] == nil { merged["error"] = "\(error)" }
        return merged
    }
}

/// `text`: `[<N>|timestamp] level [label] message key=value …`, one line per event.
struct TextLogHandler: ReplicatorLogHandler {
    let label: String
    let journal: Bool
    let output: any LogOutput
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var pinnedLevel: Logger.Level?

    init(label: String, journal: Bool, output: any LogOutput) {
        self.label = label
        self.journal = journal
        self.output = output
    }

    func log(event: LogEvent) {
        output.write(Self.format(level: event.level, message: "\(event.message)", metadata: mergedMetadata(event),
                                 label: label, journal: journal))
    }

    static func format(level: Logger.Level, message: String, metadata: Logger.Metadata, label: String, journal: Bool,
                       timestamp: @autoclosure () -> String = LoggingSetup.timestamp()) -> String {
        var line = journal ? "<\(LoggingSetup.syslogPriority(level))>" : timestamp() + " "
        line += level.rawValue
        if label != LoggingSetup.label { line += " [" + label + "]" }
        line += " " + escaped(message)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            line += " " + key + "=" + quoted("\(value)")
        }
        return line
    }

    /// Keeps a message on one line: control characters become `\n`, `\t`, `\u{…}`.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else { return text }
        var out = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20 || scalar.value == 0x7F: out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// A metadata value as is, or in double quotes (logfmt style) when it is empty or holds
    /// spaces, quotes, `=` or control characters.
    static func quoted(_ value: String) -> String {
        let plain = !value.isEmpty && !value.unicodeScalars.contains {
            $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7F
        }
        if plain { return value }
        return "\"" + escaped(value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")) + "\""
    }
}

/// `json`: one object per line, `{"ts","level","priority","label","message", metadata…}`
/// (metadata values as strings; the fixed keys win over metadata of the same name).
struct JSONLogHandler: ReplicatorLogHandler {
    let label: String
    let journal: Bool
    let output: any LogOutput
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?
    var pinnedLevel: Logger.Level?

    init(label: String, journal: Bool, output: any LogOutput) {
        self.label = label
        self.journal = journal
        self.output = output
    }

    func log(event: LogEvent) {
        guard let line = Self.format(level: event.level, message: "\(event.message)", metadata: mergedMetadata(event),
                                     label: label, journal: journal) else { return }
        output.write(line)
    }

    static func format(level: Logger.Level, message: String, metadata: Logger.Metadata, label: String, journal: Bool,
                       timestamp: String = LoggingSetup.timestamp()) -> String? {
        var object: [String: Any] = [:]
        for (key, value) in metadata { object[key] = "\(value)" }
        object["ts"] = timestamp
        object["level"] = level.rawValue
        object["priority"] = LoggingSetup.syslogPriority(level)
        object["label"] = label
        object["message"] = message
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]) else {
            return nil
        }
        let json = String(decoding: data, as: UTF8.self)
        return journal ? "<\(LoggingSetup.syslogPriority(level))>" + json : json
    }
}
