/// A secret string (a DSN: it holds a password).
///
/// `description`, `debugDescription` and its mirror never show the value, so interpolating a
/// configuration into a log line or an error is safe. ``value`` gives it.
public struct Secret: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The secret itself. Never log it.
    public let value: String

    public init(_ value: String) { self.value = value }

    /// `<redacted>`.
    public var description: String { "<redacted>" }
    /// `<redacted>`.
    public var debugDescription: String { "<redacted>" }
    /// No children, so `dump(_:)` does not show the value either.
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}
