/// Text-format Postgres array literals for `unnest($n::type[])` parameters.
///
/// Every element is double-quoted with `"` and `\` escaped, so no element can break out of
/// its slot whatever it contains (NUL bytes are rejected earlier: Postgres text cannot hold them).
enum PostgresArray {
    static func text(_ values: [String?]) -> String {
        var out = "{"
        out.reserveCapacity(values.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
        for (i, v) in values.enumerated() {
            if i > 0 { out.append(",") }
            guard let v else { out.append("NULL"); continue }
            out.append("\"")
            for ch in v.unicodeScalars {
                if ch == "\"" || ch == "\\" { out.append("\\") }
                out.unicodeScalars.append(ch)
            }
            out.append("\"")
        }
        out.append("}")
        return out
    }

    static func text(_ values: [String]) -> String { text(values.map(Optional.some)) }

    static func integers<T: BinaryInteger>(_ values: [T]) -> String {
        "{" + values.map { String($0) }.joined(separator: ",") + "}"
    }

    /// `bytea` elements in hex form (`\x…`).
    static func bytea(_ values: [[UInt8]?]) -> String {
        text(values.map { $0.map(hex) })
    }

    static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(2 + bytes.count * 2)
        out.append(UInt8(ascii: "\\"))
        out.append(UInt8(ascii: "x"))
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0xf)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
