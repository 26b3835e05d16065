import Foundation
import Testing
@testable import ReplicationCore

/// docs/events.md and the decoder agree: every documented example decodes to its type.
@Suite("Event contract: the documented examples")
struct DocumentedEventTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func examples() throws -> [String] {
        let doc = try String(contentsOf: repository.appendingPathComponent("docs/events.md"), encoding: .utf8)
        return doc.components(separatedBy: "```json\n").dropFirst().compactMap { $0.components(separatedBy: "```").first }
    }

    @Test("Every ```json example of docs/events.md decodes, and every event type has one")
    func everyExampleDecodes() throws {
        let examples = try Self.examples()
        var kinds = Set<String>()
        for text in examples {
            switch EventDecoder.decode(Array(text.utf8)) {
            case .failure(let e):
                Issue.record("docs/events.md example does not decode: \(e)\n\(text)")
            case .success(let event):
                switch event {
                case .messageUpserted: kinds.insert(text.contains("\"type\"") ? "message.upserted" : "seed-style")
                case .messageDeleted: kinds.insert("message.deleted")
                case .sessionDeleted: kinds.insert("session.deleted")
                }
                // Both decoder paths agree.
                #expect(try EventDecoder.decodeWithFoundation(Array(text.utf8)) == event)
            }
        }
        #expect(kinds == ["message.upserted", "message.deleted", "session.deleted", "seed-style"])
    }

    @Test("The documented seed-style example gets the documented id")
    func seedExampleID() throws {
        let seed = try #require(try Self.examples().first { !$0.contains("\"type\"") })
        guard case .success(.messageUpserted(let u)) = EventDecoder.decode(Array(seed.utf8)) else {
            Issue.record("not an upsert"); return
        }
        // python3 -c "import uuid; print(uuid.uuid5(uuid.NAMESPACE_URL, 'sess-7\nus-east-1\n2026-11-24T10:00:00.123456\nuser\nWhat is the capital of France?'))"
        #expect(u.messageID == UUID(uuidString: "3a91b079-3c6a-58e6-b8d2-e5ce19205a08"))
        #expect(u.version == 1)
    }
}
