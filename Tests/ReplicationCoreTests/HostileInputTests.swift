import Foundation
import Testing
@testable import ReplicationCore

/// The committed corpus of nasty record values (`Fuzz/corpus`, also the fuzzer's seeds) and a
/// few generated ones too large to commit (10 MB values): each is decoded to exactly the
/// dead-letter reason its file name starts with (`<reason>--<what>.json`, `ok--…` for the
/// valid seeds), with a short, precise message — and quickly.
@Suite("Hostile record values")
struct HostileInputTests {
    static let corpusDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    static let corpus: [String] = {
        ((try? FileManager.default.contentsOfDirectory(atPath: corpusDirectory)) ?? []).sorted()
    }()

    @Test("The corpus covers every kind the issue names and every reason the decoder has")
    func corpusIsComplete() {
        #expect(Self.corpus.count >= 50, "Fuzz/corpus not found or too small at \(Self.corpusDirectory)")
        let reasons = Set(Self.corpus.map { String($0.prefix { $0 != "-" }) })
        for reason in EventDecoder.reasons {
            #expect(reasons.contains(reason), "no corpus file for reason \(reason)")
        }
        #expect(reasons.contains("ok"))
        #expect(reasons.subtracting(EventDecoder.reasons + ["ok"]).isEmpty, "unknown reason prefixes: \(reasons)")
        for kind in ["deep-nesting", "version-beyond-int64", "duplicate_key", "invalid_utf8", "nul", "wrong_type", "invalid_timestamp--year"] {
            #expect(Self.corpus.contains { $0.lowercased().contains(kind) }, "no corpus file about \(kind)")
        }
    }

    @Test("Each corpus file decodes to the reason its name gives, with a precise message", arguments: corpus)
    func corpusFile(_ name: String) throws {
        let bytes = try #require(FileManager.default.contents(atPath: Self.corpusDirectory + "/" + name))
        let expected = String(name.prefix { $0 != "-" })
        let started = Self.threadCPUSeconds()
        let result = EventDecoder.decode(Array(bytes))
        #expect(Self.threadCPUSeconds() - started < 10, "decoding \(name) took too long")
        switch result {
        case .success(let event):
            #expect(expected == "ok", "\(name) decoded to \(event)")
        case .failure(let error):
            #expect(error.reason == expected, "\(name): \(error)")
            Self.expectPrecise(error, name)
            if name.contains("deep-nesting") {
                #expect(error.message.contains("nested deeper than 512 levels, at byte"), "\(name): \(error)")
            }
        }
    }

    /// A valid `message.upserted` event with `field` set to the raw JSON `json`.
    static func upsert(_ field: String, json: String) -> [UInt8] {
        var fields: [(String, String)] = [
            ("type", #""message.upserted""#), ("event_id", #""e-1""#),
            ("message_id", #""5f7e9c52-1b2c-4d3e-8f40-123456789abc""#), ("session_id", #""sess-42""#),
            ("role", #""user""#), ("content", #""hello""#), ("origin_region", #""us-east-1""#),
            ("created_at", #""2026-11-24T10:00:00Z""#), ("version", "1"),
        ]
        if let i = fields.firstIndex(where: { $0.0 == field }) { fields[i].1 = json } else { fields.append((field, json)) }
        return Array(("{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}").utf8)
    }

    static let tenMB = 10 * 1024 * 1024

    /// CPU seconds this thread has used. The decoding bounds above guard against a value that
    /// makes the decoder super-linear (minutes or hours, not seconds); they count the decoder's
    /// own CPU time, not the wall clock, so a loaded machine cannot make them fail.
    static func threadCPUSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    @Test("10 MB values are dead letters with a short message, decoded in linear time", arguments: [
        ("content", "oversize", "`content` is 10485760 bytes"),
        ("session_id", "oversize", "`session_id` is 10485760 bytes"),
        ("role", "unknown_role", "10485760 bytes"),
        ("created_at", "invalid_timestamp", "`created_at`"),
        ("version", "invalid_value", "`version`"),
    ])
    func tenMegabyteValues(_ field: String, _ reason: String, _ mentioning: String) throws {
        let json = field == "version" ? String(repeating: "9", count: Self.tenMB) : "\"" + String(repeating: "x", count: Self.tenMB) + "\""
        let started = Self.threadCPUSeconds()
        let result = EventDecoder.decode(Self.upsert(field, json: json))
        #expect(Self.threadCPUSeconds() - started < 30, "decoding a 10 MB \(field) took too long")
        guard case .failure(let error) = result else { Issue.record("a 10 MB \(field) decoded"); return }
        #expect(error.reason == reason, "\(error)")
        #expect(error.message.contains(mentioning), "\(error)")
        Self.expectPrecise(error, field)
    }

    @Test("A 10 MB unknown field is ignored; 10 MB of nesting or garbage is invalid JSON")
    func tenMegabyteStructures() {
        let ignored = EventDecoder.decode(Self.upsert("attachment", json: "\"" + String(repeating: "x", count: Self.tenMB) + "\""))
        #expect((try? ignored.get()) != nil, "a large unknown field is not a reason to refuse an event")
        for (name, bytes) in [
            ("nesting", Array(String(repeating: "[", count: Self.tenMB).utf8)),
            ("an unterminated string", Array(("{\"content\":\"" + String(repeating: "a", count: Self.tenMB)).utf8)),
            ("NUL bytes", [UInt8](repeating: 0, count: Self.tenMB)),
        ] {
            guard case .failure(let error) = EventDecoder.decode(bytes) else { Issue.record("10 MB of \(name) decoded"); continue }
            #expect(error.reason == "invalid_json", "10 MB of \(name): \(error)")
            if name == "nesting" { #expect(error.message.contains("nested deeper than 512 levels, at byte 512"), "\(error)") }
            Self.expectPrecise(error, name)
        }
    }

    /// Short, single-line, and naming the field for the reasons that are about one field.
    static func expectPrecise(_ error: DecodeError, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!error.message.isEmpty && error.message.count <= 300, "\(what): \(error.message.count) characters", sourceLocation: sourceLocation)
        #expect(!error.message.contains("\n"), "\(what): multi-line message", sourceLocation: sourceLocation)
        if ["missing_field", "wrong_type", "unknown_type", "unknown_role", "invalid_timestamp", "oversize"].contains(error.reason) {
            #expect(error.message.contains("`"), "\(what): the message names no field: \(error)", sourceLocation: sourceLocation)
        }
    }
}
