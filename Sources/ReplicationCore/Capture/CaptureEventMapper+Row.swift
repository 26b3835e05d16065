import Foundation

extension CaptureEventMapper {
    /// A row of the messages table, its values checked.
    struct Row {
        var messageID: String
        var sessionID: String
        var role: String
        var content: String
        var region: String
        var createdAt: Timestamp
        var version: Int64
        /// The attributes column's JSON object text, when configured and not NULL.
        var attributes: String?
    }

    /// Where each mapped column sits in a relation's rows.
    struct Layout {
        let messageID: Int, sessionID: Int, role: Int, content: Int, region: Int, createdAt: Int, version: Int
        let attributes: Int?
        let names: [String]

        init(_ relation: PgOutputMessage.Relation, _ columns: MessageColumns) throws(UnpublishableChange) {
            names = relation.columns.map(\.name)
            func index(_ column: String) throws(UnpublishableChange) -> Int {
                guard let i = relation.columns.firstIndex(where: { $0.name == column }) else {
                    throw UnpublishableChange(.missingColumn, "table \(relation.namespace).\(relation.name) has no column \"\(column)\"")
                }
                return i
            }
            messageID = try index(columns.messageID)
            sessionID = try index(columns.sessionID)
            role = try index(columns.role)
            content = try index(columns.content)
            region = try index(columns.region)
            createdAt = try index(columns.createdAt)
            version = try index(columns.version)
            if let a = columns.attributes { attributes = try index(a) } else { attributes = nil }
        }

        /// The message id of a row, if it is there as text (for logs).
        func messageIDText(_ tuple: PgOutputMessage.Tuple) -> String? {
            guard messageID < tuple.values.count, case .text(let b) = tuple.values[messageID] else { return nil }
            return String(validating: b.prefix(64), as: UTF8.self)
        }

        /// The row's values; an unchanged TOAST value is taken from `fill` (the old row).
        func row(_ tuple: PgOutputMessage.Tuple, fill: PgOutputMessage.Tuple?) throws(UnpublishableChange) -> Row {
            let id = messageIDText(tuple)
            func text(_ i: Int, nullable: Bool = false) throws(UnpublishableChange) -> String? {
                guard i < tuple.values.count else {
                    throw UnpublishableChange(.missingColumn, "the row has \(tuple.values.count) columns, \"\(names[i])\" is column \(i + 1)", messageID: id)
                }
                var value = tuple.values[i]
                if value == .unchangedToast, let fill, i < fill.values.count { value = fill.values[i] }
                switch value {
                case .text(let bytes):
                    guard let s = String(validating: bytes, as: UTF8.self) else {
                        throw UnpublishableChange(.invalidValue, "\"\(names[i])\" is not UTF-8", messageID: id)
                    }
                    return s
                case .null:
                    if nullable { return nil }
                    throw UnpublishableChange(.invalidValue, "\"\(names[i])\" is NULL", messageID: id)
                case .unchangedToast:
                    throw UnpublishableChange(.unchangedToast, "\"\(names[i])\" is an unchanged TOAST value and the old row is not logged (replica identity not FULL)",
                                              messageID: id)
                case .binary:
                    throw UnpublishableChange(.invalidValue, "\"\(names[i])\" arrived in binary format", messageID: id)
                }
            }
            func required(_ i: Int) throws(UnpublishableChange) -> String {
                guard let s = try text(i) else { throw UnpublishableChange(.invalidValue, "\"\(names[i])\" is NULL", messageID: id) }
                return s
            }
            let idText = try required(messageID)
            guard let uuid = Self.canonicalUUID(idText) ?? UUID(uuidString: idText)?.uuidString.lowercased() else {
                throw UnpublishableChange(.invalidValue, "\"\(names[messageID])\" is not a uuid", messageID: id)
            }
            let versionText = try required(version)
            guard let v = Int64(versionText) else {
                throw UnpublishableChange(.invalidValue, "\"\(names[version])\" is not a bigint: \(versionText.prefix(40))", messageID: id)
            }
            let createdText = try required(createdAt)
            guard let created = Timestamp(rfc3339: createdText) else {
                throw UnpublishableChange(.invalidValue, "\"\(names[createdAt])\" is not an ISO timestamp: \(createdText.prefix(40))", messageID: id)
            }
            var attributesText: String? = nil
            if let a = attributes, let raw = try text(a, nullable: true) {
                // Spliced into the event as it is: it must be exactly one JSON object.
                guard (try? JSONSerialization.jsonObject(with: Data(raw.utf8))) is [String: Any] else {
                    throw UnpublishableChange(.invalidValue, "\"\(names[a])\" is not a JSON object", messageID: id)
                }
                attributesText = raw
            }
            return Row(messageID: uuid, sessionID: try required(sessionID), role: try required(role),
                       content: try required(content), region: try required(region), createdAt: created, version: v,
                       attributes: attributesText)
        }
    }
}

extension CaptureEventMapper.Layout {
    /// `s` in the lowercase 8-4-4-4-12 form when it is a uuid in that form (either case; what
    /// Postgres prints), without Foundation's sscanf-based parser; nil for anything else.
    static func canonicalUUID(_ s: String) -> String? {
        var s = s
        var lower = true
        let valid = s.withUTF8 { u -> Bool in
            guard u.count == 36 else { return false }
            for i in 0..<36 {
                let c = u[i]
                if i == 8 || i == 13 || i == 18 || i == 23 {
                    guard c == UInt8(ascii: "-") else { return false }
                    continue
                }
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "a")...UInt8(ascii: "f"): break
                case UInt8(ascii: "A")...UInt8(ascii: "F"): lower = false
                default: return false
                }
            }
            return true
        }
        guard valid else { return nil }
        return lower ? s : s.lowercased()
    }
}

/// Writes one flat JSON object, keys in the order given (the event's JSON).
struct JSONObjectWriter {
    private var out: [UInt8]
    private var first = true

    init(capacity: Int = 512) {
        out = []
        out.reserveCapacity(capacity)
        out.append(UInt8(ascii: "{"))
    }

    private mutating func key(_ k: String) {
        if !first { out.append(UInt8(ascii: ",")) }
        first = false
        Self.appendString(&out, k)
        out.append(UInt8(ascii: ":"))
    }

    mutating func string(_ k: String, _ v: String) {
        key(k)
        Self.appendString(&out, v)
    }

    mutating func integer(_ k: String, _ v: Int64) {
        key(k)
        out.append(contentsOf: String(v).utf8)
    }

    /// `v` is already JSON text (checked by the caller).
    mutating func raw(_ k: String, _ v: String) {
        key(k)
        out.append(contentsOf: v.utf8)
    }

    mutating func finish() -> [UInt8] {
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// A JSON string: `"` and `\` escaped, control characters as `\u00XX` (or their short forms).
    static func appendString(_ out: inout [UInt8], _ s: String) {
        out.append(UInt8(ascii: "\""))
        var s = s
        s.withUTF8 { u in
            // Runs of bytes that need no escape are copied whole.
            var start = 0
            for i in 0..<u.count where u[i] < 0x20 || u[i] == UInt8(ascii: "\"") || u[i] == UInt8(ascii: "\\") {
                if start < i { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<i])) }
                appendEscaped(&out, u[i])
                start = i + 1
            }
            if start < u.count { out.append(contentsOf: UnsafeBufferPointer(rebasing: u[start...])) }
        }
        out.append(UInt8(ascii: "\""))
    }

    private static func appendEscaped(_ out: inout [UInt8], _ b: UInt8) {
        switch b {
        case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
        case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
        case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
        case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
        case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
        case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 15)]]
        default: out.append(b)
        }
    }
}
