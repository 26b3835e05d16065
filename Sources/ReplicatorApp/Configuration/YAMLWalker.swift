internal import Yams

// MARK: - Walking Yams nodes

/// Walks a composed YAML tree, producing errors that carry the full key path.
struct YAMLWalker {
    let file: String

    func error(_ key: String, _ message: String) -> ConfigError {
        ConfigError(file: file, key: key.isEmpty ? nil : key, message: message)
    }

    static func join(_ parent: String, _ child: String) -> String {
        parent.isEmpty ? child : "\(parent).\(child)"
    }

    /// The entries of a mapping, each with its full key path; unknown keys are errors.
    /// A `null` node is an empty mapping when `nullIsEmpty`.
    func entries(
        of node: Node, at key: String, known: [String], nullIsEmpty: Bool = true
    ) throws(ConfigError) -> [(name: String, key: String, node: Node)] {
        if nullIsEmpty && node.isNullScalar { return [] }
        guard case .mapping(let mapping) = node else {
            throw error(key, "expected a mapping (with keys \(known.joined(separator: ", "))), got \(Self.kind(of: node))")
        }
        var result: [(name: String, key: String, node: Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                throw error(key, "keys must be strings, got \(Self.kind(of: keyNode)) as a key")
            }
            let path = Self.join(key, scalar.string)
            guard known.contains(scalar.string) else {
                throw error(path, "unknown key (known keys: \(known.joined(separator: ", ")))")
            }
            result.append((scalar.string, path, value))
        }
        return result
    }

    /// Any non-null scalar, as written. Errors never show the value (it may be a DSN).
    func string(_ node: Node, at key: String) throws(ConfigError) -> String {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected a string, got \(Self.kind(of: node))")
        }
        return scalar.string
    }

    /// A plain decimal integer (`_` separators allowed).
    func int(_ node: Node, at key: String) throws(ConfigError) -> Int {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected an integer, got \(Self.kind(of: node))")
        }
        if scalar.style == .plain || scalar.style == .any, let value = Self.decimal(scalar.string) { return value }
        throw error(key, "expected an integer, got \(quoted(scalar.string))")
    }

    /// `true`/`false` (YAML 1.1 `yes`/`no`/`on`/`off` too), unquoted.
    func bool(_ node: Node, at key: String) throws(ConfigError) -> Bool {
        guard case .scalar(let scalar) = node, !node.isNullScalar else {
            throw error(key, "expected a boolean (true or false), got \(Self.kind(of: node))")
        }
        if node.tagName == .bool, let value = Bool.construct(from: scalar) { return value }
        throw error(key, "expected a boolean (true or false), got \(quoted(scalar.string))")
    }

    static func decimal(_ text: String) -> Int? {
        var digits = Substring(text)
        var sign = ""
        if let first = digits.first, first == "+" || first == "-" {
            sign = first == "-" ? "-" : ""
            digits = digits.dropFirst()
        }
        guard let first = digits.first, first.isASCII, first.isNumber,
              digits.allSatisfy({ ($0.isASCII && $0.isNumber) || $0 == "_" })
        else { return nil }
        return Int(sign + digits.filter { $0 != "_" })
    }

    static func kind(of node: Node) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .alias: return "an alias"
        case .scalar:
            switch node.tagName {
            case .null: return "null"
            case .bool: return "a boolean"
            case .int: return "an integer"
            case .float: return "a number"
            case .timestamp: return "a timestamp"
            default: return "a string"
            }
        }
    }

    /// Yams' error without its source snippet (the snippet may show a DSN).
    static func describe(_ error: YamlError) -> String {
        func at(_ mark: Mark) -> String { "line \(mark.line), column \(mark.column)" }
        func context(_ context: YamlError.Context?) -> String {
            guard let context else { return "" }
            return " (\(context.text) at \(at(context.mark)))"
        }
        switch error {
        case let .scanner(ctx, problem, mark, _), let .parser(ctx, problem, mark, _), let .composer(ctx, problem, mark, _):
            return "invalid YAML at \(at(mark)): \(problem)\(context(ctx))"
        case let .reader(problem, offset, _, yaml):
            guard let offset else { return "invalid YAML: \(problem)" }
            // Yams gives the offset in Characters.
            let before = yaml.prefix(offset)
            let line = before.reduce(1) { $1.isNewline ? $0 + 1 : $0 }
            let lineStart = before.lastIndex(where: \.isNewline).map { before.index(after: $0) } ?? before.startIndex
            let column = before[lineStart...].count + 1
            return "invalid YAML at line \(line), column \(column): \(problem)"
        case let .duplicatedKeysInMapping(duplicates, ctx):
            // ctx.text is the whole document: never print it.
            let keys = duplicates.sorted().map { quoted($0) }.joined(separator: ", ")
            return "invalid YAML at \(at(ctx.mark)): duplicate key \(keys) in one mapping"
        case .dataCouldNotBeDecoded:
            return "invalid YAML: cannot decode the text"
        default:
            return "invalid YAML"
        }
    }
}

extension Node {
    /// The resolved tag (`.str`, `.int`, `.bool`, `.null`, …; Yams keeps `Tag.name` internal).
    var tagName: Tag.Name { Tag.Name(rawValue: tag.rawValue) }

    /// A `null` scalar (`~`, `null`, or nothing after the colon).
    var isNullScalar: Bool {
        if case .scalar = self { return tagName == .null }
        return false
    }
}
