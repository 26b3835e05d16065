import Foundation
import Testing
@_spi(Fuzzing) @testable import ReplicationCore

/// Row changes → events. Every event is read back with the daemon's own decoder (both of its
/// paths): what capture publishes is exactly the documented event format.
@Suite("CaptureEventMapper")
struct CaptureEventMapperTests {
    typealias M = PgOutputMessage
    static let mapper = CaptureEventMapper(region: "us-east-1", columns: .standard)
    static let tx = CaptureEventMapper.Transaction(commitLSN: LSN(0x1511780), commitTime: Timestamp(rfc3339: "2026-12-06T20:05:00.5Z"))

    static let relation = M.Relation(oid: 16384, namespace: "public", name: "messages", replicaIdentity: .full,
                                     columns: ["message_id", "session_id", "role", "content", "region", "created_at", "version",
                                               "replicated_at"].map { .init(isKey: true, name: $0, typeOID: 25, typeModifier: -1) })

    static func row(id: String = "5f7e9c52-1b2c-4d3e-8f40-123456789abc", session: String = "sess-42", content: M.Value = .text(Array("hi".utf8)),
                    region: String = "eu-west-1", version: String = "1") -> M.Tuple {
        M.Tuple(values: [.text(Array(id.utf8)), .text(Array(session.utf8)), .text(Array("user".utf8)), content,
                         .text(Array(region.utf8)), .text(Array("2026-11-24 10:00:00.123456+00".utf8)), .text(Array(version.utf8)),
                         .text(Array("2026-11-24 10:00:01+00".utf8))])
    }

    /// Maps and decodes; every event must decode the same on both decoder paths.
    static func events(_ change: M, relation: M.Relation = relation, mapper: CaptureEventMapper = mapper) throws -> ([Event], CaptureEventMapper.Mapped) {
        var t = tx
        let mapped = try mapper.map(change, relation: relation, in: &t)
        let events = try mapped.events.map { e in
            let decoded = try EventDecoder.decode(e.value).get()
            #expect(e.key == Array(decoded.sessionID.utf8))
            if let both = EventDecoder.decodeOnBothPaths(e.value) { #expect(try both.fast.get() == both.foundation.get()) }
            return decoded
        }
        #expect(t.produced == mapped.events.count)
        return (events, mapped)
    }

    static let id = UUID(uuidString: "5f7e9c52-1b2c-4d3e-8f40-123456789abc")!

    @Test("INSERT: message.upserted of the row, keyed by its session, origin = the row's region, id stable")
    func insert() throws {
        let (events, mapped) = try Self.events(.insert(relation: 16384, new: Self.row(content: .text(Array("Bonjour \"monde\" \\ é\n\u{1}".utf8)))))
        #expect(events == [.messageUpserted(MessageUpsert(
            messageID: Self.id, sessionID: "sess-42", role: .user, content: "Bonjour \"monde\" \\ é\n\u{1}", originRegion: "eu-west-1",
            createdAt: Timestamp(rfc3339: "2026-11-24T10:00:00.123456Z")!, version: 1))])
        let json = String(decoding: mapped.events[0].value, as: UTF8.self)
        #expect(json.contains("\"event_id\":\"capture:us-east-1:0/1511780:0\""))
        #expect(mapped.events[0].timestampMs == Timestamp(rfc3339: "2026-12-06T20:05:00.5Z")!.microseconds / 1000)
        #expect(mapped.note == nil)
    }

    @Test("UPDATE: the new version; an unchanged TOAST content comes from the old row, never as empty")
    func updateFillsUnchangedToast() throws {
        let long = String(repeating: "é", count: 4000)
        let (events, mapped) = try Self.events(.update(relation: 16384, old: .init(kind: .full, tuple: Self.row(content: .text(Array(long.utf8)))),
                                                       new: Self.row(content: .unchangedToast, version: "2")))
        guard case .messageUpserted(let u) = events.first else { Issue.record("\(events)"); return }
        #expect(u.content == long && u.version == 2 && events.count == 1 && mapped.note == nil)
        // Without the old row the value is unknown: refused, not published empty.
        #expect { try Self.events(.update(relation: 16384, old: nil, new: Self.row(content: .unchangedToast, version: "2"))) }
            throws: { ($0 as? UnpublishableChange)?.reason == .unchangedToast }
    }

    @Test("UPDATE that does not raise the version: published as it is, with a note")
    func updateWithoutANewVersion() throws {
        let (events, mapped) = try Self.events(.update(relation: 16384, old: .init(kind: .full, tuple: Self.row(version: "3")),
                                                       new: Self.row(content: .text(Array("edited".utf8)), version: "3")))
        guard case .messageUpserted(let u) = events.first else { Issue.record("\(events)"); return }
        #expect(u.version == 3 && u.content == "edited")
        #expect(mapped.note?.contains("did not rise (3 → 3)") == true)
    }

    @Test("UPDATE of the message id: a tombstone for the old id, then the new row")
    func updateOfTheID() throws {
        let other = "00000000-0000-4000-8000-000000000009"
        let (events, _) = try Self.events(.update(relation: 16384, old: .init(kind: .full, tuple: Self.row(version: "4")),
                                                  new: Self.row(id: other, version: "4")))
        #expect(events.count == 2)
        guard case .messageDeleted(let d) = events.first, case .messageUpserted(let u) = events.last else { Issue.record("\(events)"); return }
        #expect(d.messageID == Self.id && d.version == 5 && u.messageID == UUID(uuidString: other))
    }

    @Test("DELETE: a tombstone at the deleted version + 1, at the commit time; without the old row it is refused")
    func delete() throws {
        let (events, _) = try Self.events(.delete(relation: 16384, old: .init(kind: .full, tuple: Self.row(version: "2"))))
        #expect(events == [.messageDeleted(MessageDeletion(messageID: Self.id, sessionID: "sess-42", originRegion: "eu-west-1",
                                                           occurredAt: Timestamp(rfc3339: "2026-12-06T20:05:00.5Z")!, version: 3))])
        let max = try Self.events(.delete(relation: 16384, old: .init(kind: .full, tuple: Self.row(version: String(Int64.max))))).0
        #expect(max.first.map { if case .messageDeleted(let d) = $0 { d.version == .max } else { false } } == true)
        let keyOnly = M.Tuple(values: [.text(Array(Self.id.uuidString.lowercased().utf8))] + Array(repeating: .null, count: 7))
        #expect { try Self.events(.delete(relation: 16384, old: .init(kind: .key, tuple: keyOnly))) }
            throws: { ($0 as? UnpublishableChange).map { $0.reason == .noOldRow && $0.messageID == Self.id.uuidString.lowercased() } == true }
    }

    @Test("a session erasure message: one session.deleted; the erased rows' DELETEs that follow publish nothing; hostile content refused")
    func sessionErasure() throws {
        var t = Self.tx
        let mapped = try Self.mapper.erasure(Array(#"{"session_id": "sess-42", "occurred_at": "2026-12-06T20:05:00.250000Z"}"#.utf8), in: &t)
        let decoded = try mapped.events.map { try EventDecoder.decode($0.value).get() }
        #expect(decoded == [.sessionDeleted(SessionDeletion(sessionID: "sess-42", originRegion: "us-east-1",
                                                             occurredAt: Timestamp(rfc3339: "2026-12-06T20:05:00.25Z")!))])
        #expect(mapped.events.first?.key == Array("sess-42".utf8) && t.produced == 1)
        let erasedRow = try Self.mapper.map(.delete(relation: 16384, old: .init(kind: .full, tuple: Self.row())), relation: Self.relation, in: &t)
        #expect(erasedRow.events.isEmpty)
        let otherSession = try Self.mapper.map(.delete(relation: 16384, old: .init(kind: .full, tuple: Self.row(session: "other"))),
                                               relation: Self.relation, in: &t)
        #expect(otherSession.events.count == 1)
        for hostile in [#"{"session_id": "", "occurred_at": "2026-12-06T20:05:00Z"}"#, #"{"session_id": "s"}"#, "not json", "[1]",
                        #"{"session_id": "s", "occurred_at": "yesterday"}"#, #"{"session_id": 7, "occurred_at": "2026-12-06T20:05:00Z"}"#,
                        #"{"session_id": "a\u0000b", "occurred_at": "2026-12-06T20:05:00Z"}"#] {
            var u = Self.tx
            #expect(throws: UnpublishableChange.self, "\(hostile)") { try Self.mapper.erasure(Array(hostile.utf8), in: &u) }
        }
    }

    @Test("values an event cannot carry are refused with the column named")
    func invalidValues() {
        let cases: [(M.Tuple, UnpublishableChange.Reason, String)] = [
            (Self.row(session: "x").replacing(1, .null), .invalidValue, "\"session_id\" is NULL"),
            (Self.row(version: "two"), .invalidValue, "\"version\" is not a bigint"),
            (Self.row(id: "nope"), .invalidValue, "\"message_id\" is not a uuid"),
            (Self.row().replacing(5, .text(Array("24/11/2026".utf8))), .invalidValue, "\"created_at\" is not an ISO timestamp"),
            (Self.row().replacing(3, .text([0xFF, 0xFE])), .invalidValue, "\"content\" is not UTF-8"),
            (Self.row().replacing(3, .binary([1])), .invalidValue, "binary"),
            (M.Tuple(values: Array(Self.row().values.prefix(4))), .missingColumn, "the row has 4 columns"),
        ]
        for (tuple, reason, text) in cases {
            #expect { try Self.events(.insert(relation: 16384, new: tuple)) }
                throws: { ($0 as? UnpublishableChange).map { $0.reason == reason && $0.description.contains(text) } == true }
        }
        var renamed = Self.relation
        renamed.columns[3].name = "body"
        #expect { try Self.events(.insert(relation: 16384, new: Self.row()), relation: renamed) }
            throws: { ($0 as? UnpublishableChange)?.description.contains("has no column \"content\"") == true }
    }

    @Test("a configured attributes column travels as the event's attributes object")
    func attributes() throws {
        let columns = try MessageColumns(mapping: ["content": "body"], replicatedAt: nil, attributes: "extra")
        let mapper = CaptureEventMapper(region: "us-east-1", columns: columns)
        var relation = Self.relation
        relation.columns[3].name = "body"
        relation.columns.append(.init(isKey: false, name: "extra", typeOID: 3802, typeModifier: -1))
        var tuple = Self.row()
        tuple.values.append(.text(Array(#"{"model": "gpt", "n": [1, 2]}"#.utf8)))
        let (events, _) = try Self.events(.insert(relation: 16384, new: tuple), relation: relation, mapper: mapper)
        guard case .messageUpserted(let u) = events.first else { Issue.record("\(events)"); return }
        #expect(u.attributes == #"{"model": "gpt", "n": [1, 2]}"#)
        tuple.values[8] = .null
        #expect(try Self.events(.insert(relation: 16384, new: tuple), relation: relation, mapper: mapper).0.first
            .map { if case .messageUpserted(let u) = $0 { u.attributes == nil } else { false } } == true)
        tuple.values[8] = .text(Array(#"{"a": 1}, "version": 99"#.utf8))
        #expect { try Self.events(.insert(relation: 16384, new: tuple), relation: relation, mapper: mapper) }
            throws: { ($0 as? UnpublishableChange)?.description.contains("not a JSON object") == true }
    }

    @Test("the changes a real PostgreSQL 15 sent become the expected events")
    func realPostgres15() throws {
        let messages = try PgOutputDecoderTests.captured().map { try M(decoding: $0.bytes) }
        var relations: [UInt32: M.Relation] = [:]
        var tx = Self.tx
        var events: [Event] = []
        var refused: [UnpublishableChange.Reason] = []
        for m in messages {
            switch m {
            case .relation(let r): relations[r.oid] = r
            case .begin(let b): tx = .init(commitLSN: b.finalLSN, commitTime: b.commitTimestamp)
            case .insert(let oid, _), .update(let oid, _, _), .delete(let oid, _):
                guard relations[oid]?.name == "messages" else { continue }
                do {
                    events += try Self.mapper.map(m, relation: relations[oid]!, in: &tx).events.map { try EventDecoder.decode($0.value).get() }
                } catch let e as UnpublishableChange { refused.append(e.reason) }
            default: break
            }
        }
        #expect(refused.isEmpty)
        // INSERT, UPDATE to version 2, DELETE, the origin's INSERT (filtered later, not here),
        // the TOAST INSERT and its version-only UPDATE.
        #expect(events.count == 6)
        guard events.count == 6, case .messageUpserted(let edited) = events[1], case .messageDeleted(let deleted) = events[2],
              case .messageUpserted(let toast) = events[5] else { Issue.record("\(events)"); return }
        #expect(edited.content == "edited" && edited.version == 2)
        #expect(deleted.version == 3 && deleted.sessionID == "sess-42" && deleted.originRegion == "us-east-1")
        #expect(toast.version == 2 && toast.content.utf8.count == 6400)
    }
}

extension PgOutputMessage.Tuple {
    func replacing(_ i: Int, _ v: PgOutputMessage.Value) -> Self {
        var t = self
        t.values[i] = v
        return t
    }
}
