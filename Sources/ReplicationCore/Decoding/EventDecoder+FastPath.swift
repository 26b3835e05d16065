import Foundation

extension EventDecoder {
    /// A lean single-pass scanner for the common shape of an event: one flat JSON object whose
    /// values are strings, plain integers, booleans or null, without duplicate keys.
    ///
    /// It captures the known fields exactly as the Foundation path does (`FieldValues`,
    /// then the same `Validator`). Anything else — nested values, fractions or exponents,
    /// invalid escapes, control characters, duplicate keys, a trailing comma, anything it is
    /// not sure about — returns nil, and the record takes the Foundation path, which produces
    /// the contract's exact error (or accepts what Foundation accepts). So the scanner only ever
    /// decides valid, simple records, and decides them the same way.
    ///
    /// Why: Foundation's `JSONDecoder` costs ~5 µs per ~400-byte event on these machines and
    /// dominated the daemon's profile; this path costs a fraction of that.
    /// - Parameter b: the record value, already known to be valid UTF-8.
    static func scanSimpleObject(_ b: UnsafeBufferPointer<UInt8>) -> FieldValues? {
        var s = Scanner(b: b)
        return s.object()
    }

    private struct Scanner {
        let b: UnsafeBufferPointer<UInt8>
        var i = 0

        init(b: UnsafeBufferPointer<UInt8>) { self.b = b }

        mutating func skipWhitespace() {
            while i < b.count {
                switch b[i] {
                case 0x20, 0x09, 0x0A, 0x0D: i += 1
                default: return
                }
            }
        }

        mutating func object() -> FieldValues? {
            skipWhitespace()
            guard i < b.count, b[i] == UInt8(ascii: "{") else { return nil }
            i += 1
            var values = FieldValues()
            var seen: UInt32 = 0
            var unknownKeys: [UnsafeBufferPointer<UInt8>] = []
            skipWhitespace()
            if i < b.count, b[i] == UInt8(ascii: "}") {
                i += 1
                return end() ? values : nil
            }
            while true {
                skipWhitespace()
                guard let key = rawKey() else { return nil }  // escaped keys: Foundation path
                skipWhitespace()
                guard i < b.count, b[i] == UInt8(ascii: ":") else { return nil }
                i += 1
                skipWhitespace()
                let known = Self.field(UnsafeBufferPointer(rebasing: b[key]))
                guard let value = scalarValue(isVersion: known?.field == .version) else { return nil }
                if let (field, bit) = known {
                    if seen & bit != 0 { return nil }  // duplicate: the Foundation path reports it
                    seen |= bit
                    values[field] = value
                } else {
                    let k = UnsafeBufferPointer(rebasing: b[key])
                    if unknownKeys.contains(where: { $0.elementsEqual(k) }) { return nil }
                    unknownKeys.append(k)
                }
                skipWhitespace()
                guard i < b.count else { return nil }
                if b[i] == UInt8(ascii: ",") {
                    i += 1
                    continue
                }
                if b[i] == UInt8(ascii: "}") {
                    i += 1
                    return end() ? values : nil
                }
                return nil
            }
        }

        /// The known fields' names as bytes, with a bit each for duplicate detection.
        static let names: [(bytes: [UInt8], field: Field, bit: UInt32)] =
            Field.allCases.enumerated().map { (Array($1.rawValue.utf8), $1, UInt32(1) << UInt32($0)) }

        static func field(_ key: UnsafeBufferPointer<UInt8>) -> (field: Field, bit: UInt32)? {
            for n in names where n.bytes.count == key.count && n.bytes.elementsEqual(key) {
                return (n.field, n.bit)
            }
            return nil
        }

        /// A key without escapes or control characters: its byte range (quotes excluded).
        mutating func rawKey() -> Range<Int>? {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            let start = i + 1
            var j = start
            while j < b.count {
                let c = b[j]
                if c == UInt8(ascii: "\"") {
                    i = j + 1
                    return start..<j
                }
                if c == UInt8(ascii: "\\") || c < 0x20 { return nil }
                j += 1
            }
            return nil
        }

        /// Only whitespace may follow the object.
        mutating func end() -> Bool {
            skipWhitespace()
            return i == b.count
        }

        mutating func scalarValue(isVersion: Bool) -> RawValue? {
            guard i < b.count else { return nil }
            switch b[i] {
            case UInt8(ascii: "\""):
                guard let s = string() else { return nil }
                return .string(s)
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                guard let v = integer() else { return nil }
                return .integer(v)
            case UInt8(ascii: "t"):
                return literal("true") ? .boolean : nil
            case UInt8(ascii: "f"):
                return literal("false") ? .boolean : nil
            case UInt8(ascii: "n"):
                return literal("null") ? .null : nil
            default:
                return nil  // object, array or invalid: the Foundation path
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let n = word.utf8CodeUnitCount
            guard i + n <= b.count else { return false }
            let w = UnsafeBufferPointer(start: word.utf8Start, count: n)
            for k in 0..<n where b[i + k] != w[k] { return false }
            i += n
            return true
        }

        /// A JSON integer without fraction or exponent that fits in Int64.
        mutating func integer() -> Int64? {
            var negative = false
            if b[i] == UInt8(ascii: "-") {
                negative = true
                i += 1
            }
            guard i < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) else { return nil }
            if b[i] == UInt8(ascii: "0"), i + 1 < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i + 1]) {
                return nil  // leading zero
            }
            var v: Int64 = 0
            while i < b.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b[i]) {
                let d = Int64(b[i] &- UInt8(ascii: "0"))
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (a, o2) = negative ? m.subtractingReportingOverflow(d) : m.addingReportingOverflow(d)
                if o1 || o2 { return nil }
                v = a
                i += 1
            }
            if i < b.count {
                switch b[i] {
                case UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"): return nil
                default: break
                }
            }
            return v
        }

        /// A JSON string at `i` (which is at its opening quote), unescaped.
        mutating func string() -> String? {
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { return nil }
            i += 1
            let start = i
            // Fast scan: no escapes.
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    let s = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
                    i += 1
                    return s
                }
                if c == UInt8(ascii: "\\") { break }
                if c < 0x20 { return nil }
                i += 1
            }
            guard i < b.count else { return nil }
            // With escapes.
            var out: [UInt8] = Array(UnsafeBufferPointer(rebasing: b[start..<i]))
            while i < b.count {
                let c = b[i]
                if c == UInt8(ascii: "\"") {
                    i += 1
                    return String(decoding: out, as: UTF8.self)
                }
                if c < 0x20 { return nil }
                if c != UInt8(ascii: "\\") {
                    out.append(c)
                    i += 1
                    continue
                }
                i += 1
                guard i < b.count else { return nil }
                switch b[i] {
                case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "/"): out.append(UInt8(ascii: "/"))
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard let u = hex4(at: i + 1) else { return nil }
                    i += 4
                    var scalar: Unicode.Scalar?
                    if (0xD800...0xDBFF).contains(u) {
                        // A high surrogate must be followed by an escaped low one.
                        guard i + 6 < b.count, b[i + 1] == UInt8(ascii: "\\"), b[i + 2] == UInt8(ascii: "u"),
                              let lo = hex4(at: i + 3), (0xDC00...0xDFFF).contains(lo) else { return nil }
                        i += 6
                        scalar = Unicode.Scalar(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))
                    } else if (0xDC00...0xDFFF).contains(u) {
                        return nil
                    } else {
                        scalar = Unicode.Scalar(u)
                    }
                    guard let scalar else { return nil }
                    out.append(contentsOf: String(Character(scalar)).utf8)
                default:
                    return nil
                }
                i += 1
            }
            return nil
        }

        func hex4(at p: Int) -> UInt32? {
            guard p + 4 <= b.count else { return nil }
            var v: UInt32 = 0
            for k in 0..<4 {
                let c = b[p + k]
                let d: UInt8
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
                default: return nil
                }
                v = v << 4 | UInt32(d)
            }
            return v
        }
    }
}

extension EventDecoder {
    /// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case) without Foundation's `uuid_parse`
    /// (sscanf showed in the profile); nil for anything else, which then goes to `UUID(uuidString:)`.
    static func parseUUID(_ s: String) -> UUID? {
        var s = s
        return s.withUTF8 { u -> UUID? in
            guard u.count == 36 else { return nil }
            var bytes = [UInt8](repeating: 0, count: 16)
            var k = 0
            var i = 0
            while i < 36 {
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    guard u[i] == UInt8(ascii: "-") else { return nil }
                    i += 1
                    continue
                }
                guard let hi = hex(u[i]), let lo = hex(u[i + 1]) else { return nil }
                bytes[k] = hi << 4 | lo
                k += 1
                i += 2
            }
            return UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                               bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
        }
    }

    private static func hex(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
