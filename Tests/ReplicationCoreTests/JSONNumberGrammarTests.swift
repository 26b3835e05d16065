import Foundation
import Testing
@testable import ReplicationCore

@Suite("Decoder: out-of-range numbers told from malformed literals by the JSON grammar")
struct JSONNumberGrammarTests {
    @Test("The JSON number grammar", arguments: [
        ("0", true), ("-0", true), ("12", true), ("1.5", true), ("1e400", true), ("-2.5E+10", true), ("9e-9", true),
        ("01", false), ("1.", false), (".5", false), ("+1", false), ("1e", false), ("--1", false), ("0x10", false),
        ("NaN", false), ("Infinity", false), ("", false), ("1.2.3", false), ("tru", false),
    ])
    func grammar(_ text: String, _ isNumber: Bool) {
        #expect(EventDecoder.isJSONNumber(text) == isNumber)
    }

    @Test("A bare literal's text is found after its key; strings, objects and arrays are not literals")
    func scalarText() {
        let json = Array(#"{"a": "x", "version" :  1e400 , "b": {"c": 1}, "d": 01}"#.utf8)
        json.withUnsafeBufferPointer { b in
            #expect(EventDecoder.topLevelScalarText(forKey: "version", b) == "1e400")
            #expect(EventDecoder.topLevelScalarText(forKey: "d", b) == "01")
            #expect(EventDecoder.topLevelScalarText(forKey: "a", b) == nil)
            #expect(EventDecoder.topLevelScalarText(forKey: "b", b) == nil)
            #expect(EventDecoder.topLevelScalarText(forKey: "missing", b) == nil)
        }
    }

    @Test("version 1e400 is a value out of range; version 01 is malformed JSON")
    func decisions() {
        let base = #""event_id":"e","message_id":"5f7e9c52-0000-4000-8000-000000000001","session_id":"s","role":"user","content":"c","origin_region":"r","created_at":"2026-11-24T10:00:00Z""#
        guard case .failure(let big) = EventDecoder.decode(Array("{\"type\":\"message.upserted\",\(base),\"version\":1e400}".utf8)) else {
            Issue.record("1e400 decoded"); return
        }
        #expect(big.reason == "invalid_value", "\(big)")
        guard case .failure(let bad) = EventDecoder.decode(Array("{\"type\":\"message.upserted\",\(base),\"version\":01}".utf8)) else {
            Issue.record("01 decoded"); return
        }
        #expect(bad.reason != "invalid_value", "\(bad)")
    }
}
