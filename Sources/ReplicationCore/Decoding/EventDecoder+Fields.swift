import Foundation

// The known fields of an event as Foundation's path captures them (the fast path fills the same
// `FieldValues`), before validation.

extension EventDecoder {
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

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    struct Envelope: Decodable {
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
}
