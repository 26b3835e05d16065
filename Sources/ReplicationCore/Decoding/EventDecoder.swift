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
}
