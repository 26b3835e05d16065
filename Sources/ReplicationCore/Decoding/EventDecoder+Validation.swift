import Foundation

// Validation of the captured fields into an `Event`: shared by the fast path and Foundation's
// path, so both decide alike.

extension EventDecoder {
    // MARK: - Validation

    struct Validator {
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
}
