import Foundation

// Byte-level scans of a record value and message helpers (no JSON parser): UTF-8 and NUL checks,
// top-level keys and literals, nesting depth, quoting for error messages.

extension EventDecoder {
    // MARK: - Helpers

    /// The byte offset of the first NUL in `s`'s UTF-8, by `memchr` on its contiguous storage
    /// (`utf8.firstIndex(of:)` was the top entry of the daemon's profile).
    static func firstNUL(_ s: String) -> Int? {
        var s = s
        return s.withUTF8 { u -> Int? in
            guard let base = u.baseAddress, let p = memchr(base, 0, u.count) else { return nil }
            return UnsafeRawPointer(p) - UnsafeRawPointer(base)
        }
    }

    /// A value for an error message: at most `limit` characters of output (escapes count as what
    /// they print, so 40 control characters cannot blow the message up six-fold), quoted, control
    /// characters escaped, with the total size when truncated.
    static func quote(_ s: String, limit: Int = 40) -> String {
        var out = "\""
        var count = 0
        for scalar in s.unicodeScalars {
            let piece: String
            switch scalar {
            case "\"": piece = "\\\""
            case "\\": piece = "\\\\"
            case "\n": piece = "\\n"
            case "\t": piece = "\\t"
            case "\r": piece = "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value) {
                    piece = "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    piece = String(scalar)
                }
            }
            if count + piece.count > limit {
                out += "…\" (\(s.utf8.count) bytes)"
                return out
            }
            out += piece
            count += piece.count
        }
        return out + "\""
    }

    /// A short, payload-free summary of a Foundation JSON error: the underlying error's case name
    /// and byte index, e.g. `unescapedControlCharacterInString at byte 7`.
    static func jsonErrorSummary(_ error: any Error) -> String {
        var underlying: any Error = error
        if case DecodingError.dataCorrupted(let context) = error, let inner = context.underlyingError {
            underlying = inner
        }
        let description = String(describing: underlying)
        guard !(underlying is DecodingError) else {
            if case DecodingError.dataCorrupted(let context) = underlying {
                return String(context.debugDescription.prefix(80))
            }
            return String(description.prefix(80))
        }
        // e.g. `unexpectedCharacter(context: Optional("..."), ascii: 120, location: ...SourceLocation(line: 1, column: 9, index: 8))`
        let name = description.prefix { $0 != "(" }.prefix(60)
        var summary = String(name)
        if let range = description.range(of: "index: ") {
            let digits = description[range.upperBound...].prefix { $0.isASCII && $0.isNumber }.prefix(12)
            if !digits.isEmpty { summary += " at byte \(digits)" }
        }
        return summary
    }

    /// Offset of the first byte that is not part of a well-formed UTF-8 sequence.
    static func firstInvalidUTF8Offset(_ bytes: [UInt8]) -> Int? {
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        var offset = 0
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid(let encoded): offset += encoded.count
            case .emptyInput: return nil
            case .error: return offset
            }
        }
    }

    /// The first key that occurs twice in the top-level object of `b`, which must be valid JSON
    /// whose top-level value is an object (the caller has parsed it already).
    static func firstDuplicateTopLevelKey(_ b: UnsafeBufferPointer<UInt8>) -> String? {
        var seen = Set<String>()
        var duplicate: String?
        forEachTopLevelKey(b) { key, _ in
            if seen.insert(key).inserted { return true }
            duplicate = key
            return false
        }
        return duplicate
    }

    /// The text of the object that is the value of top-level `key` in `b` (valid JSON, a
    /// top-level object without duplicate keys: the caller has checked).
    static func topLevelObjectText(forKey key: String, _ b: UnsafeBufferPointer<UInt8>) -> String? {
        var found: String?
        forEachTopLevelKey(b) { k, afterKey in
            guard k == key else { return true }
            var i = afterKey
            while i < b.count, b[i] != UInt8(ascii: "{") { i += 1 }  // past the colon and whitespace
            let start = i
            var depth = 0
            while i < b.count {
                switch b[i] {
                case UInt8(ascii: "\""):
                    i += 1
                    while i < b.count, b[i] != UInt8(ascii: "\"") {
                        if b[i] == UInt8(ascii: "\\") { i += 1 }
                        i += 1
                    }
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 {
                        found = String(decoding: UnsafeBufferPointer(rebasing: b[start...i]), as: UTF8.self)
                        return false
                    }
                default:
                    break
                }
                i += 1
            }
            return false
        }
        return found
    }

    /// The literal text (not a string, object or array) that is the value of top-level `key` in
    /// `b`, trimmed; nil when the key is absent or its value is not a bare literal.
    static func topLevelScalarText(forKey key: String, _ b: UnsafeBufferPointer<UInt8>) -> String? {
        var found: String?
        forEachTopLevelKey(b) { k, afterKey in
            guard k == key else { return true }
            var i = afterKey
            func isSpace(_ c: UInt8) -> Bool { c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D }
            while i < b.count, isSpace(b[i]) || b[i] == UInt8(ascii: ":") { i += 1 }
            let start = i
            while i < b.count, !isSpace(b[i]), b[i] != UInt8(ascii: ","), b[i] != UInt8(ascii: "}") { i += 1 }
            guard start < i, ![UInt8(ascii: "\""), UInt8(ascii: "{"), UInt8(ascii: "[")].contains(b[start]) else { return false }
            found = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
            return false
        }
        return found
    }

    /// Whether `text` is a number by the JSON grammar (RFC 8259 §6):
    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    static func isJSONNumber(_ text: String) -> Bool {
        var u = Array(text.utf8)[...]
        func digits() -> Int {
            let n = u.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }.count
            u = u.dropFirst(n)
            return n
        }
        if u.first == UInt8(ascii: "-") { u = u.dropFirst() }
        if u.first == UInt8(ascii: "0") { u = u.dropFirst() } else if digits() == 0 { return false }
        if u.first == UInt8(ascii: ".") { u = u.dropFirst(); if digits() == 0 { return false } }
        if u.first == UInt8(ascii: "e") || u.first == UInt8(ascii: "E") {
            u = u.dropFirst()
            if u.first == UInt8(ascii: "+") || u.first == UInt8(ascii: "-") { u = u.dropFirst() }
            if digits() == 0 { return false }
        }
        return u.isEmpty
    }

    /// Calls `visit` with every key of the top-level object of `b` (valid JSON, unescaped) and the
    /// offset just past its closing quote, in order, until `visit` returns false.
    static func forEachTopLevelKey(_ b: UnsafeBufferPointer<UInt8>, _ visit: (String, Int) -> Bool) {
        let doubleQuote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var i = 0
        let n = b.count
        var depth = 0
        var expectingKey = false
        while i < n {
            let c = b[i]
            switch c {
            case doubleQuote:
                let start = i + 1
                var hasEscape = false
                i = start
                while i < n, b[i] != doubleQuote {
                    if b[i] == backslash { hasEscape = true; i += 1 }
                    i += 1
                }
                // b[i] is the closing quote.
                if depth == 1, expectingKey {
                    let raw = UnsafeBufferPointer(rebasing: b[start..<min(i, n)])
                    let key = hasEscape ? unescapeJSONString(raw) : String(decoding: raw, as: UTF8.self)
                    if !visit(key, i + 1) { return }
                    expectingKey = false
                }
            case UInt8(ascii: "{"):
                depth += 1
                if depth == 1 { expectingKey = true }
            case UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
                if depth == 0 { return }
            case UInt8(ascii: ","):
                if depth == 1 { expectingKey = true }
            default:
                break
            }
            i += 1
        }
    }

    /// `JSONDecoder`'s nesting limit.
    static let maxNestingDepth = 512

    /// The offset of the first `[` or `{` (outside strings) that opens level `limit + 1`, if any.
    static func firstOffsetNestedDeeper(than limit: Int, _ b: UnsafeBufferPointer<UInt8>) -> Int? {
        var depth = 0
        var inString = false
        var i = 0
        while i < b.count {
            let c = b[i]
            if inString {
                if c == UInt8(ascii: "\\") { i += 1 } else if c == UInt8(ascii: "\"") { inString = false }
            } else {
                switch c {
                case UInt8(ascii: "\""): inString = true
                case UInt8(ascii: "["), UInt8(ascii: "{"):
                    depth += 1
                    if depth > limit { return i }
                case UInt8(ascii: "]"), UInt8(ascii: "}"): depth -= 1
                default: break
                }
            }
            i += 1
        }
        return nil
    }

    /// The value of a JSON string body with escapes (invalid surrogates become U+FFFD).
    static func unescapeJSONString(_ raw: UnsafeBufferPointer<UInt8>) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(raw.count)
        var scalars = String.UnicodeScalarView()
        func flush() {
            if !bytes.isEmpty {
                scalars.append(contentsOf: String(decoding: bytes, as: UTF8.self).unicodeScalars)
                bytes.removeAll(keepingCapacity: true)
            }
        }
        func hex4(_ at: Int) -> UInt32? {
            guard at + 4 <= raw.count else { return nil }
            var v: UInt32 = 0
            for k in at..<(at + 4) {
                let c = raw[k]
                let d: UInt8
                switch c {
                case 0x30...0x39: d = c - 0x30
                case 0x41...0x46: d = c - 0x41 + 10
                case 0x61...0x66: d = c - 0x61 + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
        var i = 0
        while i < raw.count {
            let c = raw[i]
            guard c == UInt8(ascii: "\\"), i + 1 < raw.count else { bytes.append(c); i += 1; continue }
            let e = raw[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "b"): bytes.append(0x08)
            case UInt8(ascii: "f"): bytes.append(0x0C)
            case UInt8(ascii: "n"): bytes.append(0x0A)
            case UInt8(ascii: "r"): bytes.append(0x0D)
            case UInt8(ascii: "t"): bytes.append(0x09)
            case UInt8(ascii: "u"):
                flush()
                guard let unit = hex4(i) else { scalars.append("\u{FFFD}"); continue }
                i += 4
                if (0xD800...0xDBFF).contains(unit), i + 6 <= raw.count,
                   raw[i] == UInt8(ascii: "\\"), raw[i + 1] == UInt8(ascii: "u"),
                   let low = hex4(i + 2), (0xDC00...0xDFFF).contains(low) {
                    i += 6
                    let value = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    scalars.append(Unicode.Scalar(value) ?? "\u{FFFD}")
                } else {
                    scalars.append(Unicode.Scalar(unit) ?? "\u{FFFD}")
                }
            default: bytes.append(e)  // \" \\ \/
            }
        }
        flush()
        return String(scalars)
    }
}
