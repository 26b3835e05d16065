/// A validated, optionally schema-qualified SQL identifier for the configurable `messages` table
/// (names are validated identifiers, never spliced from untrusted input).
///
/// Each part must match `[A-Za-z_][A-Za-z0-9_]*` and be at most 63 bytes (Postgres's
/// `NAMEDATALEN - 1`). The only way SQL sees the name is ``quoted``.
public struct TableName: Sendable, Hashable, CustomStringConvertible {
    /// `nil` when unqualified (resolved through the session's `search_path`).
    public let schema: String?
    public let name: String

    /// Validates `text` (`name` or `schema.name`).
    /// - Throws: ``TableNameError`` saying what is wrong with it.
    public init(validating text: String) throws(TableNameError) {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 1 || parts.count == 2 else {
            throw TableNameError(text: text, problem: "expected `name` or `schema.name`")
        }
        for part in parts {
            guard let problem = Self.problem(with: part) else { continue }
            throw TableNameError(text: text, problem: problem)
        }
        self.schema = parts.count == 2 ? parts[0] : nil
        self.name = parts[parts.count - 1]
    }

    private static func problem(with part: String) -> String? {
        if part.isEmpty { return "an empty identifier" }
        if part.utf8.count > 63 { return "identifier `\(part.prefix(20))…` is longer than 63 bytes" }
        for (i, c) in part.utf8.enumerated() {
            let isLetter = (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c == 95
            let isDigit = c >= 48 && c <= 57
            if !(isLetter || (i > 0 && isDigit)) {
                return "identifiers may contain only letters, digits and `_`, and must not start with a digit"
            }
        }
        return nil
    }

    /// The name quoted for SQL, e.g. `"app"."messages"`.
    public var quoted: String {
        if let schema { return "\"\(schema)\".\"\(name)\"" }
        return "\"\(name)\""
    }

    /// The bare index name (unqualified, as `CREATE INDEX` wants it), quoted.
    public func quotedIndexName(suffix: String) -> String {
        "\"\(String((name + suffix).utf8.prefix(63)) ?? name)\""
    }

    public var description: String { schema.map { "\($0).\(name)" } ?? name }
}

/// An invalid table name in the configuration.
public struct TableNameError: Error, Sendable, CustomStringConvertible {
    public var text: String
    public var problem: String
    public var description: String { "invalid table name \"\(text.prefix(80))\": \(problem)" }
}
