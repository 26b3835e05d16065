/// A configuration problem: which file, which key (a YAML key path such as `regions[1].dsn`,
/// or an environment variable name) and what is wrong. Never contains a secret.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    /// The configuration file.
    public var file: String
    /// The key path (`apply.max_batch_events`, `regions[0].dsn_file`) or environment variable
    /// (`REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS`); `nil` for the file as a whole.
    public var key: String?
    /// What is wrong.
    public var message: String

    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    /// `<file>: <key>: <message>`, or `<file>: <message>` without a key.
    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

/// `"value"` with escapes, truncated to 60 characters, for error messages. Never use it on a secret.
func quoted(_ value: String) -> String {
    let shown = value.count > 60 ? String(value.prefix(60)) + "…" : value
    return shown.debugDescription
}
