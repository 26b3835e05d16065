import Foundation

/// Decodes and validates one Kafka record value into an ``Event`` (docs/events.md, docs/event.schema.json).
///
/// Every failure is a ``DecodeError`` whose `reason` is one of ``EventDecoder/reasons`` and whose
/// `message` names the offending field and quotes at most ~40 characters of its value (payloads
/// can be 1 MiB; error messages stay short).
///
/// Behaviour worth knowing:
/// - **Unknown fields are allowed** and ignored (forward compatibility: a producer may add fields
///   before the replicator knows them). Only the known fields below are type-checked.
/// - **Duplicate keys**: Foundation's `JSONDecoder` silently keeps the *first* occurrence of a
///   duplicated key. Because that makes the meaning of a record ambiguous (other parsers keep the
///   last), the decoder rescans the top-level object's keys (one linear pass, no allocation per
///   byte) and rejects a duplicated **top-level** key with `duplicate_key`. Duplicates nested
///   inside unknown fields are not looked for (those values are ignored anyway).
/// - `null` is not "absent": `"version": null` is `wrong_type`, not `missing_field`.
/// - Integers written in exponent or fraction form that are exactly integral (`1.0`, `1e2`) are
///   accepted as integers (that is what `JSONDecoder` does); `1.5` is `wrong_type`, integral values
///   beyond `Int64` (`1e30`) are `invalid_value`.
/// - Foundation's parser accepts a trailing comma in an object (`{"a":1,}`); so does this decoder.
/// - JSON nested deeper than `JSONDecoder`'s limit (512 levels), anywhere in the record, is
///   `invalid_json` naming the byte where it goes too deep (no crash, no stack overflow).
/// - Foundation checks string and number literals lazily, when a field is decoded. So a malformed
///   literal (raw control character or invalid/unpaired-surrogate escape in a string, a number
///   with a leading zero) is `invalid_json` naming the field when it is in a known field, and goes
///   unnoticed in an unknown field.
/// - Typed events require `event_id` (non-empty string); it is not used further.
/// - A record without `type` is a seed-style event (the article's `write_message` dict). If it
///   carries `message_id` or `version`, it is neither seed-style nor typed: `missing_field` for `type`.
public enum EventDecoder {
    /// Every `DecodeError.reason` this decoder produces.
    public static let reasons: [String] = [
        "empty_value", "invalid_utf8", "invalid_json", "not_an_object", "duplicate_key",
        "missing_field", "wrong_type", "unknown_type", "invalid_value", "oversize",
        "unknown_role", "invalid_timestamp",
    ]

    /// The event `type` values (docs/events.md).
    public static let eventTypes = ["message.upserted", "message.deleted", "session.deleted"]

    /// Maximum size of `session_id` and of the region fields, in UTF-8 bytes.
    public static let maxIdentifierBytes = 256
    /// Maximum size of `content`, in UTF-8 bytes (1 MiB).
    public static let maxContentBytes = 1_048_576
    /// Maximum size of `attributes`, in bytes of JSON text as received (64 KiB).
    public static let maxAttributesBytes = 65_536

    /// Decodes one Kafka record value; `nil` (a record without a value) is `empty_value`.
    public static func decode(_ value: [UInt8]?) -> Result<Event, DecodeError> {
        do throws(DecodeError) {
            return .success(try decodeThrowing(value))
        } catch {
            return .failure(error)
        }
    }

    // Stateless after configuration; Foundation declares it Sendable.
    private static let jsonDecoder = JSONDecoder()

    static func decodeThrowing(_ value: [UInt8]?) throws(DecodeError) -> Event {
        guard let value else {
            throw DecodeError(reason: "empty_value", message: "the record has no value (null)")
        }
        guard !value.isEmpty else {
            throw DecodeError(reason: "empty_value", message: "the record value is empty (0 bytes)")
        }
        if String(validating: value, as: UTF8.self) == nil {
            let offset = firstInvalidUTF8Offset(value) ?? 0
            throw DecodeError(reason: "invalid_utf8",
                              message: "the record value is not valid UTF-8 (first invalid byte at offset \(offset) of \(value.count))")
        }

        // The common case: a flat object of simple values (see `scanSimpleObject`).
        if let values = value.withUnsafeBufferPointer({ scanSimpleObject($0) }) {
            return try Validator(values: values).event()
        }
        return try decodeWithFoundation(value)
    }

    /// The two parsers on one input, for the fuzzer's differential check (`scripts/fuzz`): the
    /// fast path's answer and Foundation's for the same bytes. nil when the fast path does not
    /// take the input (no value, not UTF-8, or a shape it leaves to Foundation), so only
    /// Foundation decides.
    @_spi(Fuzzing)
    public static func decodeOnBothPaths(_ value: [UInt8])
        -> (fast: Result<Event, DecodeError>, foundation: Result<Event, DecodeError>)? {
        guard !value.isEmpty, String(validating: value, as: UTF8.self) != nil,
              let values = value.withUnsafeBufferPointer({ scanSimpleObject($0) }) else { return nil }
        func result(_ body: () throws(DecodeError) -> Event) -> Result<Event, DecodeError> {
            do throws(DecodeError) { return .success(try body()) } catch { return .failure(error) }
        }
        return (result { () throws(DecodeError) in try Validator(values: values).event() },
                result { () throws(DecodeError) in try decodeWithFoundation(value) })
    }

    /// The general path: Foundation's `JSONDecoder`, then the same validation.
    static func decodeWithFoundation(_ value: [UInt8]) throws(DecodeError) -> Event {
        let envelope: Envelope
        do {
            envelope = try jsonDecoder.decode(Envelope.self, from: Data(value))
        } catch let error as DecodeError {
            throw error
        } catch {
            // The one cause worth naming apart (hostile input), nesting beyond the limit, is found
            // by our own scan; otherwise Foundation's summary is only quoted, never interpreted.
            let detail: String
            if let offset = value.withUnsafeBufferPointer({ firstOffsetNestedDeeper(than: maxNestingDepth, $0) }) {
                detail = "arrays/objects nested deeper than \(maxNestingDepth) levels, at byte \(offset)"
            } else {
                detail = jsonErrorSummary(error)
            }
            throw DecodeError(reason: "invalid_json", message: "the record value is not valid JSON (\(detail))")
        }

        if let duplicate = value.withUnsafeBufferPointer({ firstDuplicateTopLevelKey($0) }) {
            throw DecodeError(reason: "duplicate_key",
                              message: "the key \(quote(duplicate)) appears more than once in the top-level object")
        }

        var values = envelope.values
        for field in Field.allCases {
            // A literal Foundation refused that is a well-formed JSON number is one out of range
            // (e.g. `1e400`), not a malformed one: decided by the JSON grammar, not by error text.
            guard case .malformed? = values[field],
                  let literal = value.withUnsafeBufferPointer({ topLevelScalarText(forKey: field.rawValue, $0) }),
                  isJSONNumber(literal) else { continue }
            values[field] = .number(nil)
        }
        if values[.attributes] == .object {
            guard let text = value.withUnsafeBufferPointer({ topLevelObjectText(forKey: Field.attributes.rawValue, $0) }) else {
                throw DecodeError(reason: "invalid_json", message: "field `attributes`: its object could not be delimited")
            }
            values[.attributes] = .json(text)
        }
        return try Validator(values: values).event()
    }

    // MARK: - Capture of the known fields

    enum Field: String, CodingKey, CaseIterable {
        /// Position in `allCases`.
        var slot: Int {
            switch self {
            case .type: 0
            case .eventID: 1
            case .messageID: 2
            case .sessionID: 3
            case .role: 4
            case .content: 5
            case .originRegion: 6
            case .region: 7
            case .createdAt: 8
            case .occurredAt: 9
            case .version: 10
            case .attributes: 11
            }
        }

        case type
        case eventID = "event_id"
        case messageID = "message_id"
        case sessionID = "session_id"
        case role
        case content
        case originRegion = "origin_region"
        case region
        case createdAt = "created_at"
        case occurredAt = "occurred_at"
        case version
        case attributes
    }

    /// The captured known fields: a fixed slot per field (no hashing per event).
    struct FieldValues: Equatable {
        private var slots = [RawValue?](repeating: nil, count: Field.allCases.count)

        subscript(_ field: Field) -> RawValue? {
            get { slots[field.slot] }
            set { slots[field.slot] = newValue }
        }
    }

    /// A known field's JSON value, as far as validation needs to know it.
    enum RawValue: Equatable {
        case string(String)
        case integer(Int64)
        /// A number that is not an `Int64`; `nil` when not even a finite `Double`.
        case number(Double?)
        case boolean, null, object, array
        /// A JSON object's text exactly as received (only `attributes` is captured this way).
        case json(String)
        /// A string or number literal Foundation's parser rejects when it gets to it (it checks
        /// literals lazily): an unescaped control character, an invalid escape, an unpaired
        /// surrogate escape, a number with a leading zero. `detail` names the problem, no payload.
        case malformed(detail: String)

        var kind: String {
            switch self {
            case .string: "a string"
            case .malformed: "a malformed literal"
            case .integer: "an integer"
            case .number(let d?): "a number (\(d))"
            case .number(nil): "a number out of range"
            case .boolean: "a boolean"
            case .null: "null"
            case .object: "an object"
            case .array: "an array"
            case .json: "an object"
            }
        }
    }

    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    private struct Envelope: Decodable {
        var values = FieldValues()

        init(from decoder: any Decoder) throws {
            let container: KeyedDecodingContainer<Field>
            do {
                container = try decoder.container(keyedBy: Field.self)
            } catch DecodingError.typeMismatch, DecodingError.valueNotFound {
                throw DecodeError(reason: "not_an_object",
                                  message: "the record value must be a JSON object, got \(Self.topLevelKind(decoder))")
            }
            for field in Field.allCases where container.contains(field) {
                values[field] = Self.capture(container, field)
            }
        }

        static func capture(_ c: KeyedDecodingContainer<Field>, _ key: Field) -> RawValue {
            if (try? c.decodeNil(forKey: key)) == true { return .null }
            // Try the expected type first, so that the valid path throws nothing. A `typeMismatch`
            // means "some other JSON type"; any other error is about the literal itself.
            if key == .version, let v = try? c.decode(Int64.self, forKey: key) { return .integer(v) }
            do {
                return .string(try c.decode(String.self, forKey: key))
            } catch DecodingError.typeMismatch {
            } catch {
                return .malformed(detail: EventDecoder.jsonErrorSummary(error))
            }
            if key != .version, let v = try? c.decode(Int64.self, forKey: key) { return .integer(v) }
            if (try? c.decode(Bool.self, forKey: key)) != nil { return .boolean }
            do {
                return .number(try c.decode(Double.self, forKey: key))
            } catch DecodingError.typeMismatch {
            } catch {
                // Well-formed but beyond a Double, or malformed: `decodeWithFoundation` tells the
                // two apart by the literal's own grammar (never by Foundation's error text).
                return .malformed(detail: EventDecoder.jsonErrorSummary(error))
            }
            if (try? c.nestedContainer(keyedBy: AnyKey.self, forKey: key)) != nil { return .object }
            if (try? c.nestedUnkeyedContainer(forKey: key)) != nil { return .array }
            return .malformed(detail: "a value of unknown kind")
        }

        static func topLevelKind(_ decoder: any Decoder) -> String {
            if (try? decoder.unkeyedContainer()) != nil { return "an array" }
            guard let c = try? decoder.singleValueContainer() else { return "something else" }
            if c.decodeNil() { return "null" }
            if (try? c.decode(Bool.self)) != nil { return "a boolean" }
            if (try? c.decode(String.self)) != nil { return "a string" }
            return "a number"
        }
    }

    // MARK: - Validation

    private struct Validator {
        let values: FieldValues

        func event() throws(DecodeError) -> Event {
            guard let typeValue = values[.type] else { return try seedStyle() }
            let type = try string(.type, typeValue)
            switch type {
            case "message.upserted":
                let context = "(type `message.upserted`)"
                _ = try eventID(context)
                let messageID = try uuid(.messageID, context)
                let sessionID = try identifier(.sessionID, context)
                let role = try role(context)
                let content = try content(context)
                let origin = try identifier(.originRegion, context)
                let createdAt = try timestamp(.createdAt, context).parsed
                let version = try version(context)
                let attributes = try attributes()
                return .messageUpserted(MessageUpsert(messageID: messageID, sessionID: sessionID, role: role,
                                                      content: content, originRegion: origin,
                                                      createdAt: createdAt, version: version, attributes: attributes))
            case "message.deleted":
                let context = "(type `message.deleted`)"
                _ = try eventID(context)
                let messageID = try uuid(.messageID, context)
                let sessionID = try identifier(.sessionID, context)
                let origin = try identifier(.originRegion, context)
                let occurredAt = try timestamp(.occurredAt, context).parsed
                let version = try version(context)
                return .messageDeleted(MessageDeletion(messageID: messageID, sessionID: sessionID,
                                                       originRegion: origin, occurredAt: occurredAt,
                                                       version: version))
            case "session.deleted":
                let context = "(type `session.deleted`)"
                _ = try eventID(context)
                let sessionID = try identifier(.sessionID, context)
                let origin = try identifier(.originRegion, context)
                let occurredAt = try timestamp(.occurredAt, context).parsed
                return .sessionDeleted(SessionDeletion(sessionID: sessionID, originRegion: origin,
                                                       occurredAt: occurredAt))
            default:
                throw DecodeError(reason: "unknown_type",
                                  message: "field `type` must be one of \(EventDecoder.eventTypes.joined(separator: ", ")), got \(quote(type))")
            }
        }

        /// The article's `write_message` dict: no `type`, `message_id` or `version`.
        func seedStyle() throws(DecodeError) -> Event {
            for typedOnly in [Field.messageID, .version] where values[typedOnly] != nil {
                throw DecodeError(reason: "missing_field",
                                  message: "required field `type` is missing: the event has `\(typedOnly.rawValue)`, so it is not a seed-style event")
            }
            let context = "(seed-style event without `type`)"
            let sessionID = try identifier(.sessionID, context)
            let role = try role(context)
            let content = try content(context)
            let region = try identifier(.region, context)
            let createdAt = try timestamp(.createdAt, context).parsed
            let attributes = try attributes()
            // The canonical text, not the text as received: the database's id trigger can only
            // see the stored instant (`SeedID`).
            let createdAtText = createdAt.seedIDText

            var name: [UInt8] = []
            name.reserveCapacity(sessionID.utf8.count + region.utf8.count + createdAtText.utf8.count
                                 + role.rawValue.utf8.count + content.utf8.count + 4)
            for (i, part) in [sessionID, region, createdAtText, role.rawValue, content].enumerated() {
                if i > 0 { name.append(UInt8(ascii: "\n")) }
                name.append(contentsOf: part.utf8)
            }
            let messageID = UUIDv5.make(namespace: UUIDv5.urlNamespace, name: name)
            return .messageUpserted(MessageUpsert(messageID: messageID, sessionID: sessionID, role: role,
                                                  content: content, originRegion: region,
                                                  createdAt: createdAt, version: 1, attributes: attributes))
        }

        /// `attributes`: optional; a JSON object of at most ``EventDecoder/maxAttributesBytes``
        /// bytes as received; `null` means none.
        func attributes() throws(DecodeError) -> String? {
            guard let value = values[.attributes] else { return nil }
            switch value {
            case .null:
                return nil
            case .json(let text):
                let bytes = text.utf8.count
                if bytes > EventDecoder.maxAttributesBytes {
                    throw DecodeError(reason: "oversize",
                                      message: "field `attributes` is \(bytes) bytes of JSON, the limit is \(EventDecoder.maxAttributesBytes) (64 KiB)")
                }
                // Foundation checks nested literals lazily: check the whole object now, so that
                // what reaches the database is JSON that `jsonb` takes.
                if !((try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any]) {
                    throw DecodeError(reason: "invalid_json", message: "field `attributes` is not a well-formed JSON object")
                }
                if text.contains("\\u0000") {
                    throw DecodeError(reason: "invalid_value",
                                      message: "field `attributes` contains an escaped NUL (\\u0000), which Postgres jsonb cannot store")
                }
                return text
            case .malformed(let detail):
                throw malformed(.attributes, detail)
            default:
                throw DecodeError(reason: "wrong_type", message: "field `attributes` must be a JSON object, got \(value.kind)")
            }
        }

        // MARK: Field rules

        func required(_ field: Field, _ context: String) throws(DecodeError) -> RawValue {
            guard let value = values[field] else {
                throw DecodeError(reason: "missing_field", message: "required field `\(field.rawValue)` is missing \(context)")
            }
            return value
        }

        func string(_ field: Field, _ value: RawValue) throws(DecodeError) -> String {
            switch value {
            case .string(let s):
                return s
            case .malformed(let detail):
                throw malformed(field, detail)
            default:
                throw DecodeError(reason: "wrong_type", message: "field `\(field.rawValue)` must be a string, got \(value.kind)")
            }
        }

        func malformed(_ field: Field, _ detail: String) -> DecodeError {
            DecodeError(reason: "invalid_json", message: "field `\(field.rawValue)` is not a valid JSON literal: \(detail)")
        }

        func requiredString(_ field: Field, _ context: String) throws(DecodeError) -> String {
            try string(field, try required(field, context))
        }

        func eventID(_ context: String) throws(DecodeError) -> String {
            let s = try requiredString(.eventID, context)
            if s.isEmpty {
                throw DecodeError(reason: "invalid_value", message: "field `event_id` must not be empty")
            }
            return s
        }

        func uuid(_ field: Field, _ context: String) throws(DecodeError) -> UUID {
            let s = try requiredString(field, context)
            guard let id = EventDecoder.parseUUID(s) ?? UUID(uuidString: s) else {
                throw DecodeError(reason: "invalid_value",
                                  message: "field `\(field.rawValue)` must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got \(quote(s))")
            }
            return id
        }

        /// `session_id`, `origin_region`, `region`: non-empty, ≤ 256 bytes, no NUL.
        func identifier(_ field: Field, _ context: String) throws(DecodeError) -> String {
            let s = try requiredString(field, context)
            let bytes = s.utf8.count
            if bytes == 0 {
                throw DecodeError(reason: "invalid_value", message: "field `\(field.rawValue)` must not be empty")
            }
            if bytes > EventDecoder.maxIdentifierBytes {
                throw DecodeError(reason: "oversize",
                                  message: "field `\(field.rawValue)` is \(bytes) bytes of UTF-8, the limit is \(EventDecoder.maxIdentifierBytes): \(quote(s))")
            }
            if firstNUL(s) != nil {
                throw DecodeError(reason: "invalid_value",
                                  message: "field `\(field.rawValue)` contains a NUL character (U+0000), which Postgres text cannot store: \(quote(s))")
            }
            return s
        }

        func role(_ context: String) throws(DecodeError) -> MessageRole {
            let s = try requiredString(.role, context)
            guard let role = MessageRole(rawValue: s) else {
                throw DecodeError(reason: "unknown_role",
                                  message: "field `role` must be one of system, user, assistant, tool, got \(quote(s))")
            }
            return role
        }

        func content(_ context: String) throws(DecodeError) -> String {
            let s = try requiredString(.content, context)
            let bytes = s.utf8.count
            if bytes > EventDecoder.maxContentBytes {
                throw DecodeError(reason: "oversize",
                                  message: "field `content` is \(bytes) bytes of UTF-8, the limit is \(EventDecoder.maxContentBytes) (1 MiB)")
            }
            if let offset = firstNUL(s) {
                throw DecodeError(reason: "invalid_value",
                                  message: "field `content` contains a NUL character (U+0000) at byte \(offset), which Postgres text cannot store")
            }
            return s
        }

        /// The raw text (as received) and its parsed value.
        func timestamp(_ field: Field, _ context: String) throws(DecodeError) -> (text: String, parsed: Timestamp) {
            let s = try requiredString(field, context)
            guard let t = Timestamp(rfc3339: s) else {
                throw DecodeError(reason: "invalid_timestamp",
                                  message: "field `\(field.rawValue)` must be an RFC 3339 timestamp such as 2026-11-24T10:00:00.123456Z, got \(quote(s))")
            }
            return (s, t)
        }

        func version(_ context: String) throws(DecodeError) -> Int64 {
            let value = try required(.version, context)
            let rule = "field `version` must be an integer ≥ 1"
            switch value {
            case .integer(let v) where v >= 1:
                return v
            case .integer(let v):
                throw DecodeError(reason: "invalid_value", message: "\(rule), got \(v)")
            case .number(let d?) where d.rounded(.towardZero) == d:
                throw DecodeError(reason: "invalid_value", message: "\(rule) and ≤ \(Int64.max), got \(d)")
            case .number(let d?):
                throw DecodeError(reason: "wrong_type", message: "\(rule), got a non-integer number \(d)")
            case .number(nil):
                throw DecodeError(reason: "invalid_value", message: "\(rule) and ≤ \(Int64.max), got a number out of range")
            case .malformed(let detail):
                throw malformed(.version, detail)
            default:
                throw DecodeError(reason: "wrong_type", message: "\(rule), got \(value.kind)")
            }
        }
    }

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
