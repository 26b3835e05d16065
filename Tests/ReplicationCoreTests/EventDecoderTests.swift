import Foundation
import Testing
@testable import ReplicationCore

// MARK: - Helpers

private typealias Fields = [(key: String, json: String)]

private let upsertFields: Fields = [
    ("type", #""message.upserted""#),
    ("event_id", #""7b0c1e2a-0000-4000-8000-000000000001""#),
    ("message_id", #""5f7e9c52-1b2c-4d3e-8f40-123456789abc""#),
    ("session_id", #""sess-42""#),
    ("role", #""user""#),
    ("content", #""hello""#),
    ("origin_region", #""us-east-1""#),
    ("created_at", #""2026-11-24T10:00:00.123Z""#),
    ("version", "1"),
]

private let messageDeletedFields: Fields = [
    ("type", #""message.deleted""#),
    ("event_id", #""7b0c1e2a-0000-4000-8000-000000000002""#),
    ("message_id", #""5f7e9c52-1b2c-4d3e-8f40-123456789abc""#),
    ("session_id", #""sess-42""#),
    ("origin_region", #""us-east-1""#),
    ("occurred_at", #""2026-11-24T10:05:00Z""#),
    ("version", "2"),
]

private let sessionDeletedFields: Fields = [
    ("type", #""session.deleted""#),
    ("event_id", #""7b0c1e2a-0000-4000-8000-000000000003""#),
    ("session_id", #""sess-42""#),
    ("origin_region", #""eu-west-1""#),
    ("occurred_at", #""2026-11-24T11:00:00Z""#),
]

/// Exactly the dict the article's `write_message` publishes.
private let seedFields: Fields = [
    ("session_id", #""sess-1""#),
    ("role", #""user""#),
    ("content", #""hello""#),
    ("region", #""us-east-1""#),
    ("created_at", #""2026-11-24T10:00:00.123456""#),
]

private func object(_ fields: Fields) -> String {
    "{" + fields.map { "\"\($0.key)\":\($0.json)" }.joined(separator: ",") + "}"
}

private func with(_ fields: Fields, _ key: String, _ json: String) -> Fields {
    var result = fields
    if let i = result.firstIndex(where: { $0.key == key }) { result[i].json = json } else { result.append((key, json)) }
    return result
}

private func without(_ fields: Fields, _ key: String) -> Fields {
    fields.filter { $0.key != key }
}

private func decode(_ json: String) -> Result<Event, DecodeError> {
    EventDecoder.decode(Array(json.utf8))
}

private func decoded(_ json: String) throws -> Event {
    try decode(json).get()
}

/// Expects a dead letter with `reason`, whose message mentions `mentioning` (if given) and is short.
private func expectFailure(_ result: Result<Event, DecodeError>, _ reason: String, mentioning: String? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    switch result {
    case .success(let event):
        Issue.record("expected \(reason), decoded \(event)", sourceLocation: sourceLocation)
    case .failure(let error):
        #expect(error.reason == reason, "\(error)", sourceLocation: sourceLocation)
        #expect(EventDecoder.reasons.contains(error.reason), sourceLocation: sourceLocation)
        if let mentioning {
            #expect(error.message.contains(mentioning), "\(error)", sourceLocation: sourceLocation)
        }
        #expect(error.message.count <= 300, "message too long: \(error.message.count)", sourceLocation: sourceLocation)
    }
}

private func expectFailure(_ json: String, _ reason: String, mentioning: String? = nil,
                           sourceLocation: SourceLocation = #_sourceLocation) {
    expectFailure(decode(json), reason, mentioning: mentioning, sourceLocation: sourceLocation)
}

// MARK: - Tests

@Suite struct EventDecoderTests {
    // MARK: Contract examples

    @Test func messageUpserted() throws {
        let event = try decoded(object(upsertFields))
        let expected = MessageUpsert(
            messageID: UUID(uuidString: "5f7e9c52-1b2c-4d3e-8f40-123456789abc")!,
            sessionID: "sess-42", role: .user, content: "hello", originRegion: "us-east-1",
            createdAt: Timestamp(microseconds: 1_795_514_400_123_000), version: 1)
        #expect(event == .messageUpserted(expected))
        #expect(event.sessionID == "sess-42")
        #expect(event.originRegion == "us-east-1")
    }

    @Test func messageDeleted() throws {
        let event = try decoded(object(messageDeletedFields))
        let expected = MessageDeletion(
            messageID: UUID(uuidString: "5f7e9c52-1b2c-4d3e-8f40-123456789abc")!,
            sessionID: "sess-42", originRegion: "us-east-1",
            occurredAt: Timestamp(rfc3339: "2026-11-24T10:05:00Z")!, version: 2)
        #expect(event == .messageDeleted(expected))
    }

    @Test func sessionDeleted() throws {
        let event = try decoded(object(sessionDeletedFields))
        let expected = SessionDeletion(sessionID: "sess-42", originRegion: "eu-west-1",
                                       occurredAt: Timestamp(rfc3339: "2026-11-24T11:00:00Z")!)
        #expect(event == .sessionDeleted(expected))
    }

    @Test func documentedExampleVerbatim() throws {
        // The first example of docs/events.md, whitespace as written.
        let json = """
        {"type":"message.upserted","event_id":"7b0c","message_id":"5f7e9c52-1b2c-4d3e-8f40-123456789abc","session_id":"sess-42",
         "role":"user","content":"hello","origin_region":"us-east-1",
         "created_at":"2026-11-24T10:00:00.123Z","version":1}
        """
        guard case .messageUpserted(let u) = try decoded(json) else { Issue.record("wrong case"); return }
        #expect(u.createdAt.rfc3339 == "2026-11-24T10:00:00.123000Z")
    }

    @Test(arguments: ["system", "user", "assistant", "tool"])
    func everyRole(_ role: String) throws {
        guard case .messageUpserted(let u) = try decoded(object(with(upsertFields, "role", "\"\(role)\""))) else {
            Issue.record("wrong case"); return
        }
        #expect(u.role.rawValue == role)
    }

    // MARK: Seed-style events

    @Test func seedStyle() throws {
        let event = try decoded(object(seedFields))
        guard case .messageUpserted(let u) = event else { Issue.record("wrong case \(event)"); return }
        // Computed independently with Python:
        //   python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL,
        //     'sess-1\nus-east-1\n2026-11-24T10:00:00.123456\nuser\nhello'))"
        #expect(u.messageID == UUID(uuidString: "cc575345-52a2-56b7-bdaa-bddaf60d238a")!)
        #expect(u.sessionID == "sess-1")
        #expect(u.role == .user)
        #expect(u.content == "hello")
        #expect(u.originRegion == "us-east-1")
        #expect(u.version == 1)
        // No offset = UTC, microseconds exact (Python: datetime(2026,11,24,10,0,0,123456,UTC) - epoch).
        #expect(u.createdAt.microseconds == 1_795_514_400_123_456)
        // Re-delivery is the same event (same id).
        #expect(try decoded(object(seedFields)) == event)
        // Field order in the JSON does not matter.
        #expect(try decoded(object(seedFields.reversed())) == event)
    }

    @Test("A seed-style id hashes created_at in its canonical form: UTC, no offset, six fraction digits")
    func seedStyleIDUsesCanonicalCreatedAt() throws {
        let canonical = UUID(uuidString: "cc575345-52a2-56b7-bdaa-bddaf60d238a")!
        // The same instant written other ways gives the same id (the database's trigger only
        // sees the instant).
        for text in ["2026-11-24T10:00:00.123456Z", "2026-11-24 10:00:00.123456+00:00",
                     "2026-11-24T12:00:00.123456+02:00", "2026-11-24T10:00:00.1234564", "2026-11-24T10:00:00.123455500"] {
            let event = try decoded(object(with(seedFields, "created_at", "\"\(text)\"")))
            guard case .messageUpserted(let u) = event else { Issue.record("wrong case"); return }
            #expect(u.messageID == canonical, "\(text)")
        }
        // Fewer digits are padded: python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL,
        //   'sess-1\nus-east-1\n2026-11-24T10:00:00.123000\nuser\nhello'))"
        let short = try decoded(object(with(seedFields, "created_at", #""2026-11-24T10:00:00.123""#)))
        guard case .messageUpserted(let s) = short else { Issue.record("wrong case"); return }
        #expect(s.messageID == UUID(uuidString: "d99a8dec-59ed-5e02-86c6-1a46206d94be")!)
        // Python's isoformat() drops a zero microsecond: still the six-digit form.
        let whole = try decoded(object(with(seedFields, "created_at", #""2026-11-24T10:00:00""#)))
        guard case .messageUpserted(let w) = whole else { Issue.record("wrong case"); return }
        #expect(w.messageID == UUID(uuidString: "800afa8d-cb32-5cae-9a1c-c6ee01ede364")!)
        #expect(Timestamp(microseconds: 1_795_514_400_123_456).seedIDText == "2026-11-24T10:00:00.123456")
    }

    @Test("attributes: an optional JSON object, kept as received, limited in size")
    func attributes() throws {
        let attrs = #"{"model":"gpt-x","tokens":{"in":12,"out":40},"tools":[{"name":"search"}]}"#
        for fields in [upsertFields, seedFields] {
            let event = try decoded(object(fields + [("attributes", attrs)]))
            guard case .messageUpserted(let u) = event else { Issue.record("wrong case"); return }
            #expect(u.attributes == attrs)
            // null = none, and both decoder paths agree on that.
            let none = try decoded(object(fields + [("attributes", "null")]))
            guard case .messageUpserted(let n) = none else { Issue.record("wrong case"); return }
            #expect(n.attributes == nil)
            let bytes = Array(object(fields + [("attributes", "null")]).utf8)
            #expect(try EventDecoder.decodeWithFoundation(bytes) == none)
        }
        // The key spelt with an escape is the same key.
        let escaped = try decoded(#"{"attr\u0069butes": {"a": 1},"# + object(upsertFields).dropFirst())
        guard case .messageUpserted(let e) = escaped else { Issue.record("wrong case"); return }
        #expect(e.attributes == #"{"a": 1}"#)
        expectFailure(object(upsertFields + [("attributes", "[1]")]), "wrong_type", mentioning: "`attributes`")
        expectFailure(object(upsertFields + [("attributes", #""x""#)]), "wrong_type", mentioning: "`attributes`")
        expectFailure(object(upsertFields + [("attributes", #"{"a":"\u0000"}"#)]), "invalid_value", mentioning: "`attributes`")
        let big = "{\"a\":\"" + String(repeating: "x", count: EventDecoder.maxAttributesBytes) + "\"}"
        expectFailure(object(upsertFields + [("attributes", big)]), "oversize", mentioning: "`attributes`")
    }

    @Test func seedStyleAllowsExtraFields() throws {
        let event = try decoded(object(seedFields + [("trace", #"{"a":[1,2,{"b":null}]}"#), ("x", "1.5")]))
        #expect(event == (try decoded(object(seedFields))))
    }

    @Test(arguments: ["session_id", "role", "content", "region", "created_at"])
    func seedStyleMissingField(_ key: String) {
        expectFailure(object(without(seedFields, key)), "missing_field", mentioning: "`\(key)`")
    }

    @Test func seedStyleWithTypedFieldsIsAmbiguous() {
        expectFailure(object(seedFields + [("message_id", #""5f7e9c52-1b2c-4d3e-8f40-123456789abc""#)]),
                      "missing_field", mentioning: "`type`")
        expectFailure(object(seedFields + [("version", "2")]), "missing_field", mentioning: "`type`")
    }

    @Test func uuidV5KnownValues() {
        #expect(UUIDv5.urlNamespace.uuidString.lowercased() == "6ba7b811-9dad-11d1-80b4-00c04fd430c8")
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, '') and (..., 'https://example.com/')
        #expect(UUIDv5.make(namespace: UUIDv5.urlNamespace, name: []).uuidString.lowercased()
                == "1b4db7eb-4057-5ddf-91e0-36dec72071f5")
        #expect(UUIDv5.make(namespace: UUIDv5.urlNamespace, name: "https://example.com/".utf8).uuidString.lowercased()
                == "dd2c1780-811a-5296-81c5-178a0ef488bc")
        // A non-contiguous sequence hashes the same bytes.
        #expect(UUIDv5.make(namespace: UUIDv5.urlNamespace, name: "https://example.com/".utf8.lazy.map { $0 })
                == UUIDv5.make(namespace: UUIDv5.urlNamespace, name: Array("https://example.com/".utf8)))
    }

    // MARK: Timestamps in events

    @Test func offsetIsConverted() throws {
        let event = try decoded(object(with(upsertFields, "created_at", #""2026-11-24T12:00:00.123456+02:00""#)))
        guard case .messageUpserted(let u) = event else { Issue.record("wrong case"); return }
        #expect(u.createdAt.rfc3339 == "2026-11-24T10:00:00.123456Z")
    }

    @Test func invalidTimestamp() {
        expectFailure(object(with(upsertFields, "created_at", #""2023-02-29T10:00:00Z""#)), "invalid_timestamp",
                      mentioning: "`created_at`")
        expectFailure(object(with(messageDeletedFields, "occurred_at", #""yesterday""#)), "invalid_timestamp",
                      mentioning: "\"yesterday\"")
        // The message quotes at most 40 characters of the value.
        let long = String(repeating: "9", count: 10_000)
        let result = decode(object(with(sessionDeletedFields, "occurred_at", "\"\(long)\"")))
        expectFailure(result, "invalid_timestamp", mentioning: "`occurred_at`")
        if case .failure(let error) = result {
            #expect(!error.message.contains(String(repeating: "9", count: 41)))
            #expect(error.message.contains("10000 bytes"))
        }
        expectFailure(object(with(upsertFields, "created_at", "1795514400")), "wrong_type", mentioning: "`created_at`")
    }

    // MARK: Dead-letter reasons

    @Test func emptyValue() {
        expectFailure(EventDecoder.decode(nil), "empty_value")
        expectFailure(EventDecoder.decode([]), "empty_value")
    }

    @Test(arguments: [
        ([0x7B, 0xFF, 0x7D], 1),                   // 0xFF never appears in UTF-8
        ([0x7B, 0x22, 0xC3, 0x22, 0x7D], 2),       // truncated two-byte sequence
        ([0x7B, 0xC0, 0x80, 0x7D], 1),             // overlong encoding of NUL
        ([0x7B, 0xED, 0xA0, 0x80, 0x7D], 1),       // an encoded UTF-16 surrogate
        ([0x7B, 0x80, 0x7D], 1),                   // lone continuation byte
    ] as [([UInt8], Int)])
    func invalidUTF8(_ bytes: [UInt8], _ offset: Int) {
        expectFailure(EventDecoder.decode(bytes), "invalid_utf8", mentioning: "offset \(offset) of \(bytes.count)")
    }

    @Test func invalidUTF8InsideAStringValue() {
        var bytes = Array(object(upsertFields).utf8)
        let i = bytes.firstIndex(of: UInt8(ascii: "h"))!  // the "h" of "hello"
        bytes[i] = 0xFE
        expectFailure(EventDecoder.decode(bytes), "invalid_utf8", mentioning: "offset \(i)")
    }

    @Test(arguments: ["{", "{\"type\":", "{'type':'x'}", "{\"a\":1} x", "nope", "   ", "{\"a\":NaN}", "{\"a\" 1}",
                      "{\"a\":[1,2}", "{\"a\":tru}", "{\"a\":.5}", "{\"a\":+1}"])
    func invalidJSON(_ text: String) {
        expectFailure(text, "invalid_json")
    }

    @Test func foundationLeniencyIsPinned() throws {
        let plain = try decoded(object(upsertFields))
        // Foundation's JSONDecoder accepts a trailing comma.
        let trailingComma = String(object(upsertFields).dropLast()) + ",}"
        #expect(try decoded(trailingComma) == plain)
        // It checks string and number literals lazily: malformed ones in unknown fields go unnoticed ...
        #expect(try decoded(object(upsertFields + [("x", "\"a\u{01}b\\x\""), ("y", "01"), ("z", #""\ud800""#)])) == plain)
        // ... and in known fields they are invalid_json naming the field and the problem.
        expectFailure(object(with(upsertFields, "content", "\"a\u{01}b\"")), "invalid_json",
                      mentioning: "field `content` is not a valid JSON literal: unescapedControlCharacterInString at byte")
        expectFailure(object(with(upsertFields, "content", "\"a\u{00}b\"")), "invalid_json", mentioning: "`content`")
        expectFailure(object(with(upsertFields, "content", #""\ud800""#)), "invalid_json", mentioning: "`content`")
        expectFailure(object(with(upsertFields, "role", #""\x""#)), "invalid_json", mentioning: "`role`")
        expectFailure(object(with(upsertFields, "version", "01")), "invalid_json", mentioning: "`version`")
        expectFailure(object(with(upsertFields, "version", "1.")), "invalid_json", mentioning: "`version`")
    }

    @Test(arguments: ["[]", "[1,2]", "\"string\"", "42", "1e400", "true", "null"])
    func notAnObject(_ text: String) {
        expectFailure(text, "not_an_object")
    }

    @Test func duplicateKeys() {
        // Foundation's JSONDecoder would silently keep the first occurrence; the decoder rejects it.
        expectFailure(object(upsertFields + [("version", "2")]), "duplicate_key", mentioning: "\"version\"")
        expectFailure(object(upsertFields + [("content", #""other""#)]), "duplicate_key", mentioning: "\"content\"")
        // also for unknown top-level keys, and when spelled with escapes
        expectFailure(object(upsertFields + [("x", "1"), ("x", "2")]), "duplicate_key", mentioning: "\"x\"")
        expectFailure(object(upsertFields + [(#"ty\u0070e"#, #""message.upserted""#)]), "duplicate_key",
                      mentioning: "\"type\"")
        // keys that merely look alike inside strings or nested objects are not duplicates
        #expect((try? decoded(object(upsertFields + [("x", #"{"type":1,"type":2}"#), ("y", #""\"type\":""#)]))) != nil)
    }

    @Test func duplicateKeyScannerDirectly() {
        func scan(_ s: String) -> String? {
            Array(s.utf8).withUnsafeBufferPointer { EventDecoder.firstDuplicateTopLevelKey($0) }
        }
        #expect(scan(#"{"a":1,"b":[{"a":2}],"c":"a"}"#) == nil)
        #expect(scan(#" { "a" : 1 , "a" : 2 } "#) == "a")
        #expect(scan(#"{"a\"b":1,"a\u0022b":2}"#) == "a\"b")
        #expect(scan(#"{"😀":1,"\ud83d\ude00":2}"#) == "😀")
        #expect(scan(#"{"k\\":1,"k":2}"#) == nil)
        #expect(scan(#"{}"#) == nil)
    }

    @Test func unknownType() {
        expectFailure(object(with(upsertFields, "type", #""message.created""#)), "unknown_type",
                      mentioning: "\"message.created\"")
        expectFailure(object(with(upsertFields, "type", #""""#)), "unknown_type")
        expectFailure(object(with(upsertFields, "type", "1")), "wrong_type", mentioning: "`type`")
        expectFailure(object(with(upsertFields, "type", "null")), "wrong_type", mentioning: "got null")
    }

    @Test(arguments: [
        ("message.upserted", ["event_id", "message_id", "session_id", "role", "content", "origin_region", "created_at", "version"]),
        ("message.deleted", ["event_id", "message_id", "session_id", "origin_region", "occurred_at", "version"]),
        ("session.deleted", ["event_id", "session_id", "origin_region", "occurred_at"]),
    ])
    func missingField(_ type: String, _ required: [String]) {
        let fields = switch type {
        case "message.upserted": upsertFields
        case "message.deleted": messageDeletedFields
        default: sessionDeletedFields
        }
        for key in required {
            expectFailure(object(without(fields, key)), "missing_field", mentioning: "`\(key)`")
        }
    }

    @Test func wrongType() {
        let version = decode(object(with(upsertFields, "version", #""3""#)))
        expectFailure(version, "wrong_type")
        if case .failure(let error) = version {
            #expect(error.message == "field `version` must be an integer ≥ 1, got a string")
        }
        expectFailure(object(with(upsertFields, "version", "true")), "wrong_type", mentioning: "got a boolean")
        expectFailure(object(with(upsertFields, "version", "1.5")), "wrong_type", mentioning: "1.5")
        expectFailure(object(with(upsertFields, "version", "null")), "wrong_type", mentioning: "got null")
        expectFailure(object(with(upsertFields, "version", "[1]")), "wrong_type", mentioning: "got an array")
        expectFailure(object(with(upsertFields, "session_id", "42")), "wrong_type", mentioning: "`session_id` must be a string, got an integer")
        expectFailure(object(with(upsertFields, "content", "null")), "wrong_type", mentioning: "`content`")
        expectFailure(object(with(upsertFields, "role", #"["user"]"#)), "wrong_type", mentioning: "`role`")
        expectFailure(object(with(upsertFields, "message_id", #"{"id":1}"#)), "wrong_type", mentioning: "got an object")
        expectFailure(object(with(upsertFields, "event_id", "false")), "wrong_type", mentioning: "`event_id`")
        expectFailure(object(with(seedFields, "region", "1.25")), "wrong_type", mentioning: "`region`")
    }

    @Test func versionRange() throws {
        expectFailure(object(with(upsertFields, "version", "0")), "invalid_value", mentioning: "got 0")
        expectFailure(object(with(upsertFields, "version", "-1")), "invalid_value", mentioning: "got -1")
        expectFailure(object(with(upsertFields, "version", "1e30")), "invalid_value", mentioning: "`version`")
        expectFailure(object(with(upsertFields, "version", "-1e30")), "invalid_value", mentioning: "`version`")
        expectFailure(object(with(upsertFields, "version", "1e400")), "invalid_value", mentioning: "out of range")
        expectFailure(object(with(upsertFields, "version", "9223372036854775808")), "invalid_value", mentioning: "`version`")
        expectFailure(object(with(upsertFields, "version", String(repeating: "9", count: 10_000))), "invalid_value",
                      mentioning: "`version`")
        func version(_ json: String) throws -> Int64? {
            guard case .messageUpserted(let u) = try decoded(object(with(upsertFields, "version", json))) else { return nil }
            return u.version
        }
        #expect(try version("9223372036854775807") == Int64.max)
        // JSONDecoder accepts integral numbers in fraction/exponent form as integers.
        #expect(try version("1.0") == 1)
        #expect(try version("2e1") == 20)
    }

    @Test func invalidValue() {
        expectFailure(object(with(upsertFields, "message_id", #""not-a-uuid""#)), "invalid_value", mentioning: "\"not-a-uuid\"")
        expectFailure(object(with(messageDeletedFields, "message_id", #""5f7e9c52-1b2c-4d3e-8f40-123456789ab""#)),
                      "invalid_value", mentioning: "`message_id`")
        expectFailure(object(with(upsertFields, "session_id", #""""#)), "invalid_value", mentioning: "`session_id` must not be empty")
        expectFailure(object(with(upsertFields, "origin_region", #""""#)), "invalid_value", mentioning: "`origin_region`")
        expectFailure(object(with(seedFields, "region", #""""#)), "invalid_value", mentioning: "`region`")
        expectFailure(object(with(upsertFields, "event_id", #""""#)), "invalid_value", mentioning: "`event_id`")
        expectFailure(object(with(upsertFields, "session_id", #""a\u0000b""#)), "invalid_value", mentioning: "NUL")
        expectFailure(object(with(upsertFields, "origin_region", #""us\u0000""#)), "invalid_value", mentioning: "NUL")
    }

    @Test func nulInContent() {
        expectFailure(object(with(upsertFields, "content", #""hello\u0000world""#)), "invalid_value",
                      mentioning: "at byte 5")
        expectFailure(object(with(seedFields, "content", #""\u0000""#)), "invalid_value", mentioning: "`content`")
    }

    @Test func unknownRole() {
        expectFailure(object(with(upsertFields, "role", #""admin""#)), "unknown_role", mentioning: "\"admin\"")
        expectFailure(object(with(upsertFields, "role", #""User""#)), "unknown_role")
        expectFailure(object(with(seedFields, "role", #""""#)), "unknown_role")
    }

    @Test func oversizeIdentifiers() throws {
        let max = String(repeating: "s", count: 256)
        #expect(try decoded(object(with(upsertFields, "session_id", "\"\(max)\""))).sessionID == max)
        expectFailure(object(with(upsertFields, "session_id", "\"\(max)s\"")), "oversize", mentioning: "257 bytes")
        // bytes, not characters: 128 × "é" = 256 bytes ok, 129 not
        let e128 = String(repeating: "é", count: 128)
        #expect(try decoded(object(with(upsertFields, "session_id", "\"\(e128)\""))).sessionID == e128)
        expectFailure(object(with(upsertFields, "session_id", "\"\(e128)é\"")), "oversize")
        expectFailure(object(with(upsertFields, "origin_region", "\"\(max)r\"")), "oversize", mentioning: "`origin_region`")
        expectFailure(object(with(seedFields, "region", "\"\(max)r\"")), "oversize", mentioning: "`region`")
    }

    @Test func contentOneMiBBoundary() throws {
        let exactly = String(repeating: "a", count: 1_048_576)
        guard case .messageUpserted(let u) = try decoded(object(with(upsertFields, "content", "\"\(exactly)\""))) else {
            Issue.record("wrong case"); return
        }
        #expect(u.content.utf8.count == 1_048_576)
        let result = decode(object(with(upsertFields, "content", "\"\(exactly)a\"")))
        expectFailure(result, "oversize", mentioning: "1048577 bytes")
        if case .failure(let error) = result { #expect(!error.message.contains("aaaa")) }
        // multi-byte: 524,288 × "é" is exactly 1 MiB of UTF-8
        let twoByte = String(repeating: "é", count: 524_288)
        #expect((try? decoded(object(with(seedFields, "content", "\"\(twoByte)\"")))) != nil)
        expectFailure(object(with(seedFields, "content", "\"\(twoByte)x\"")), "oversize")
        // escapes count as the bytes they decode to: 2 × "\n" is 2 bytes, not 4
        let withEscapes = String(repeating: "a", count: 1_048_574) + #"\n\n"#
        #expect((try? decoded(object(with(upsertFields, "content", "\"\(withEscapes)\"")))) != nil)
    }

    // MARK: Robustness

    @Test func extraUnknownFieldsAreAllowed() throws {
        let plain = try decoded(object(upsertFields))
        let extended = try decoded(object(upsertFields + [
            ("schema", "3"), ("trace_id", #""abc""#), ("meta", #"{"k":[1,2.5,true,null,{"z":{}}]}"#), ("n", "null"),
        ]))
        #expect(plain == extended)
    }

    @Test func deepNestingDoesNotCrash() {
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        // Deeper than JSONDecoder's nesting limit anywhere: invalid_json, no stack overflow.
        expectFailure(object(upsertFields + [("deep", deep)]), "invalid_json")
        expectFailure(deep, "invalid_json")
        let deepObjects = String(repeating: #"{"a":"#, count: 10_000) + "1" + String(repeating: "}", count: 10_000)
        expectFailure(deepObjects, "invalid_json")
        // Moderate nesting in an unknown field is fine.
        let moderate = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect((try? decoded(object(upsertFields + [("deep", moderate)]))) != nil)
    }

    @Test func hugeNumbers() {
        let digits = String(repeating: "9", count: 10_000)
        // In an unknown field: ignored.
        #expect((try? decoded(object(upsertFields + [("big", digits), ("exp", "1e999999")]))) != nil)
        // As the version: rejected with a short message.
        let result = decode(object(with(upsertFields, "version", digits)))
        expectFailure(result, "invalid_value")
        if case .failure(let error) = result { #expect(!error.message.contains("9999999999")) }
    }

    @Test func messagesNeverQuoteMuchOfAValue() {
        let huge = String(repeating: "x", count: 100_000)
        let cases: [String] = [
            object(with(upsertFields, "role", "\"\(huge)\"")),
            object(with(upsertFields, "type", "\"\(huge)\"")),
            object(with(upsertFields, "message_id", "\"\(huge)\"")),
            object(with(upsertFields, "created_at", "\"\(huge)\"")),
            object(with(upsertFields, "session_id", "\"\(huge)\"")),
            object(with(seedFields, "region", "\"\(huge)\"")),
            object(upsertFields + [(huge, "1"), (huge, "2")]),
            "{\"a\":\"\(huge)",
            "{\"a\":\"\(huge)\"} \(huge)",
        ]
        for json in cases {
            guard case .failure(let error) = decode(json) else { Issue.record("decoded"); continue }
            #expect(!error.message.contains(String(repeating: "x", count: 81)), "\(error.reason)")
            #expect(error.message.count < 300, "\(error.reason): \(error.message.count)")
        }
    }

    @Test func messagesEscapeControlCharacters() {
        let result = decode(object(with(upsertFields, "role", #""a\nb\u0001""#)))
        expectFailure(result, "unknown_role")
        if case .failure(let error) = result {
            #expect(error.message.contains(#""a\nb\u{1}""#))
            #expect(!error.message.contains("\n"))
        }
    }

    @Test func byteOrderMarkIsTolerated() throws {
        // Pins the actual behaviour: Foundation skips a UTF-8 BOM before the JSON text.
        let event = try decoded("\u{FEFF}" + object(upsertFields))
        #expect(event == (try decoded(object(upsertFields))))
    }

    @Test func whitespaceAroundTheObjectIsFine() throws {
        #expect(try decoded(" \n\t" + object(sessionDeletedFields) + "\r\n ") == (try decoded(object(sessionDeletedFields))))
    }
}

// MARK: - The lean scanner against Foundation

@Suite("EventDecoder: the lean scanner decides exactly as the Foundation path")
struct EventDecoderFastPathTests {
    static let upsert = #"{"type":"message.upserted","event_id":"e1","message_id":"5f7e9c52-1b2c-4d3e-8f40-123456789abc","session_id":"sess-42","role":"user","content":"hello","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00.123456Z","version":7}"#

    static let inputs: [String] = [
        upsert,
        " \n\t" + upsert + " \r\n",
        #"{"type":"message.deleted","event_id":"e","message_id":"5f7e9c52-1b2c-4d3e-8f40-123456789abc","session_id":"s","origin_region":"eu-west-1","occurred_at":"2026-11-24T10:05:00+02:00","version":2}"#,
        #"{"type":"session.deleted","event_id":"e","session_id":"s","origin_region":"eu-west-1","occurred_at":"2026-11-24T11:00:00Z"}"#,
        #"{"session_id":"sess-42","role":"user","content":"hello","region":"us-east-1","created_at":"2026-11-24T10:00:00.123456"}"#,
        // escapes and non-ASCII text
        #"{"session_id":"s","role":"assistant","content":"line\nbreak \"quoted\" back\\slash \/ \b\f\r\t tab é \u00e9 \u4e2d \ud83d\ude00 😀","region":"r","created_at":"2026-11-24T10:00:00"}"#,
        #"{"session_id":"s","role":"user","content":"nul \u0000 inside","region":"r","created_at":"2026-11-24T10:00:00"}"#,
        // unknown fields of every simple kind, and nested ones (Foundation path)
        #"{"session_id":"s","role":"user","content":"c","region":"r","created_at":"2026-11-24T10:00:00","x":true,"y":null,"z":-12,"w":"v"}"#,
        #"{"session_id":"s","role":"user","content":"c","region":"r","created_at":"2026-11-24T10:00:00","n":{"a":[1,2]}}"#,
        // wrong types and values in known fields
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":"7""#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":0"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":-3"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":7.0"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":7.5"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":1e3"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":99999999999999999999"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":null"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":true"#),
        upsert.replacingOccurrences(of: #""version":7"#, with: #""version":07"#),
        upsert.replacingOccurrences(of: #""content":"hello""#, with: #""content":42"#),
        upsert.replacingOccurrences(of: #""content":"hello""#, with: #""content":null"#),
        upsert.replacingOccurrences(of: #""content":"hello""#, with: #""content":"bad \x escape""#),
        upsert.replacingOccurrences(of: #""content":"hello""#, with: #""content":"lone \ud800 surrogate""#),
        upsert.replacingOccurrences(of: #""content":"hello""#, with: #""content":"lone \udc00 low""#),
        upsert.replacingOccurrences(of: #""role":"user""#, with: #""role":"wizard""#),
        upsert.replacingOccurrences(of: #""type":"message.upserted""#, with: #""type":"message.exploded""#),
        upsert.replacingOccurrences(of: #""created_at":"2026-11-24T10:00:00.123456Z""#, with: #""created_at":"yesterday""#),
        // attributes: null and wrong types take the scanner, objects the Foundation path
        String(upsert.dropLast()) + #","attributes":null}"#,
        String(upsert.dropLast()) + #","attributes":"model"}"#,
        String(upsert.dropLast()) + #","attributes":3}"#,
        String(upsert.dropLast()) + #","attributes":{"model":"m","n":[1,{"k":null}]}}"#,
        String(upsert.dropLast()) + #","attributes":[1]}"#,
        // duplicates, escaped keys, trailing comma, garbage
        String(upsert.dropLast()) + #","version":8}"#,
        String(upsert.dropLast()) + #","x":1,"x":2}"#,
        String(upsert.dropLast()) + #","ty\u0070e":"message.upserted"}"#,
        String(upsert.dropLast()) + ",}",
        upsert + " x",
        "{}", "[]", "42", "\"s\"", "null", "{", "{\"a\":tru}", "{\"a\":-}", "{\"a\":1,}",
    ]

    @Test(arguments: inputs)
    func sameDecision(_ text: String) {
        let bytes = Array(text.utf8)
        let foundation: Result<Event, DecodeError>
        do throws(DecodeError) {
            foundation = .success(try EventDecoder.decodeWithFoundation(bytes))
        } catch {
            foundation = .failure(error)
        }
        #expect(EventDecoder.decode(bytes) == foundation)
    }

    @Test func simpleEventsTakeTheScanner() {
        let taken = Array(Self.upsert.utf8).withUnsafeBufferPointer { EventDecoder.scanSimpleObject($0) }
        #expect(taken?[.version] == .integer(7))
        #expect(taken?[.content] == .string("hello"))
        let nested = Array(#"{"a":{"b":1}}"#.utf8).withUnsafeBufferPointer { EventDecoder.scanSimpleObject($0) }
        #expect(nested == nil)
    }

    @Test(arguments: ["5f7e9c52-1b2c-4d3e-8f40-123456789abc", "5F7E9C52-1B2C-4D3E-8F40-123456789ABC",
                      "5f7e9c52-1b2c-4d3e-8f40-123456789ab", "5f7e9c52x1b2c-4d3e-8f40-123456789abc",
                      "5f7e9c52-1b2c-4d3e-8f40-123456789abg", "", "{5f7e9c52-1b2c-4d3e-8f40-123456789abc}"])
    func uuidParserAgreesWithFoundation(_ s: String) {
        #expect((EventDecoder.parseUUID(s) ?? UUID(uuidString: s)) == UUID(uuidString: s))
        if let parsed = EventDecoder.parseUUID(s) { #expect(parsed == UUID(uuidString: s)) }
    }
}
