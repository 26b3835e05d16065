import Foundation
import Testing
@testable import ReplicationCore

@Suite("ApplyPlan: a batch reduced to set operations")
struct ApplyPlanTests {
    let id = UUID(uuidString: "5f7e9c52-0000-4000-8000-000000000001")!
    let t0 = Timestamp(microseconds: 1_795_000_000_000_000)

    func record(_ event: Result<Event, DecodeError>, offset: Int64 = 0, ts: Int64? = 1000) -> DecodedRecord {
        DecodedRecord(record: RecordRef(topic: "t", partition: 0, offset: offset, key: nil, value: nil, timestampMs: ts), event: event)
    }

    func upsert(_ v: Int64, origin: String = "us-east-1", id: UUID? = nil) -> Result<Event, DecodeError> {
        .success(.messageUpserted(MessageUpsert(messageID: id ?? self.id, sessionID: "s", role: .user, content: "v\(v)",
                                                originRegion: origin, createdAt: t0, version: v)))
    }

    @Test("Several versions of one message collapse to the highest; the rest are stale or duplicate")
    func collapsesVersions() {
        let plan = ApplyPlan(records: [record(upsert(1), ts: 1), record(upsert(3), ts: 3), record(upsert(2), ts: 2),
                                       record(upsert(3), ts: 4)],
                             region: "eu-west-1", applyToOrigin: false)
        #expect(plan.upserts.count == 1)
        #expect(plan.upserts.first?.version == 3)
        #expect(plan.upsertTimestamps == [3])
        #expect(plan.decided[.stale] == 2)
        #expect(plan.decided[.duplicate] == 1)
        #expect(plan.pendingCount == 1)
    }

    func upsert(_ v: Int64, content: String, attributes: String? = nil) -> Result<Event, DecodeError> {
        .success(.messageUpserted(MessageUpsert(messageID: id, sessionID: "s", role: .user, content: content,
                                                originRegion: "us-east-1", createdAt: t0, version: v, attributes: attributes)))
    }

    @Test("Equal versions with different content are left to the database, one statement round each")
    func equalVersionsGoToTieRounds() {
        let plan = ApplyPlan(records: [record(upsert(2, content: "a"), ts: 1), record(upsert(2, content: "b"), ts: 2),
                                       record(upsert(2, content: "a"), ts: 3), record(upsert(2, content: "c"), ts: 4),
                                       record(upsert(2, content: "a", attributes: #"{"k":1}"#), ts: 5),
                                       record(upsert(1, content: "z"), ts: 6)],
                             region: "eu-west-1", applyToOrigin: false)
        #expect(plan.upserts.map(\.content) == ["a"])
        #expect(plan.tieRounds.map { $0.map(\.upsert.content) } == [["b"], ["c"], ["a"]])
        #expect(plan.tieRounds.map { $0.map(\.timestampMs) } == [[2], [4], [5]])
        #expect(plan.tieRounds[2][0].upsert.attributes == #"{"k":1}"#)
        #expect(plan.decided[.duplicate] == 1)  // the second "a": same content, same attributes
        #expect(plan.decided[.stale] == 1)      // version 1
        #expect(plan.pendingCount == 4)
    }

    @Test("A higher version supersedes the kept one and every tie of the lower version")
    func higherVersionDropsTies() {
        let plan = ApplyPlan(records: [record(upsert(2, content: "a")), record(upsert(2, content: "b")),
                                       record(upsert(3, content: "c"))],
                             region: "eu-west-1", applyToOrigin: false)
        #expect(plan.upserts.map(\.content) == ["c"])
        #expect(plan.tieRounds.isEmpty)
        #expect(plan.decided[.stale] == 2)
        #expect(plan.pendingCount == 1)
    }

    @Test("Upserts from the target region are skipped unless apply_to_origin; deletions never are")
    func skipsOrigin() {
        let del: Result<Event, DecodeError> = .success(.messageDeleted(MessageDeletion(
            messageID: id, sessionID: "s", originRegion: "eu-west-1", occurredAt: t0, version: 2)))
        let skip = ApplyPlan(records: [record(upsert(1, origin: "eu-west-1")), record(del)], region: "eu-west-1", applyToOrigin: false)
        #expect(skip.upserts.isEmpty)
        #expect(skip.decided[.skippedOrigin] == 1)
        #expect(skip.messageTombstones.count == 1)
        let keep = ApplyPlan(records: [record(upsert(1, origin: "eu-west-1"))], region: "eu-west-1", applyToOrigin: true)
        #expect(keep.upserts.count == 1)
        #expect(keep.decided[.skippedOrigin] == 0)
    }

    @Test("Session deletions keep the latest time; decode failures become dead letters")
    func sessionsAndDeadLetters() {
        func sdel(_ micros: Int64) -> Result<Event, DecodeError> {
            .success(.sessionDeleted(SessionDeletion(sessionID: "s", originRegion: "us-east-1", occurredAt: Timestamp(microseconds: micros))))
        }
        let plan = ApplyPlan(records: [record(sdel(5)), record(sdel(9)), record(sdel(7)),
                                       record(.failure(DecodeError(reason: "invalid_json", message: "x")), offset: 42)],
                             region: "eu-west-1", applyToOrigin: false)
        #expect(plan.sessionTombstones.map(\.occurredAt.microseconds) == [9])
        #expect(plan.decided[.stale] == 2)
        #expect(plan.deadLetters.map(\.record.offset) == [42])
        #expect(plan.deadLetters.first?.error.contains("invalid_json") == true)
        #expect(plan.decided[.deadLettered] == 1)
    }

    // MARK: - Versions that disagree on the session or the creation time

    func upsert(_ v: Int64, session: String, createdAt: Timestamp? = nil) -> Result<Event, DecodeError> {
        .success(.messageUpserted(MessageUpsert(messageID: id, sessionID: session, role: .user, content: "v\(v) in \(session)",
                                                originRegion: "us-east-1", createdAt: createdAt ?? t0, version: v)))
    }

    func erase(_ session: String) -> Result<Event, DecodeError> {
        .success(.sessionDeleted(SessionDeletion(sessionID: session, originRegion: "us-east-1", occurredAt: Timestamp(microseconds: t0.microseconds + 1))))
    }

    @Test("Versions of a message with another session or creation time are not collapsed: each identity goes to a later round, in arrival order")
    func identitiesAreNotCollapsed() {
        let later = Timestamp(microseconds: t0.microseconds + 5)
        let plan = ApplyPlan(records: [record(upsert(1, session: "s1"), ts: 1), record(upsert(2, session: "s2"), ts: 2),
                                       record(upsert(3, session: "s1"), ts: 3), record(upsert(4, session: "s2"), ts: 4),
                                       record(upsert(5, session: "s1", createdAt: later), ts: 5)],
                             region: "eu-west-1", applyToOrigin: false)
        // s1 at t0 (first seen) keeps version 3; s2 comes next, at version 4; s1 created later is a third identity.
        #expect(plan.upserts.map(\.version) == [3])
        #expect(plan.upsertTimestamps == [3])
        #expect(plan.tieRounds.map { $0.map(\.upsert.version) } == [[4], [5]])
        #expect(plan.tieRounds.map { $0.map(\.timestampMs) } == [[4], [5]])
        #expect(plan.decided[.stale] == 2)
        #expect(plan.pendingCount == 3)
    }

    @Test("The review's example in one batch, both arrival orders: no version is dropped before the database compares it with the stored row")
    func sessionChangeInOneBatchBothOrders() {
        let first = ApplyPlan(records: [record(upsert(1, session: "s1")), record(upsert(2, session: "s2")), record(erase("s2"))],
                              region: "eu-west-1", applyToOrigin: false)
        #expect(first.upserts.map(\.sessionID) == ["s1"])
        #expect(first.tieRounds.map { $0.map(\.upsert.sessionID) } == [["s2"]])
        #expect(first.sessionTombstones.map(\.sessionID) == ["s2"])
        let second = ApplyPlan(records: [record(upsert(2, session: "s2")), record(erase("s2")), record(upsert(1, session: "s1"))],
                               region: "eu-west-1", applyToOrigin: false)
        #expect(second.upserts.map(\.sessionID) == ["s2"])
        #expect(second.tieRounds.map { $0.map(\.upsert.sessionID) } == [["s1"]])
        #expect(second.decided.total == 0, "nothing decided without the database")
    }
}

@Suite("TableName validation")
struct TableNameTests {
    @Test(arguments: ["messages", "app.messages", "_m1", String(repeating: "a", count: 63)])
    func accepts(_ name: String) throws {
        #expect(try TableName(validating: name).description == name)
    }

    @Test(arguments: ["", "1abc", "a.b.c", "messages; drop table x", "m\"x", String(repeating: "a", count: 64), "a..b", "ü"])
    func rejects(_ name: String) {
        #expect(throws: TableNameError.self) { try TableName(validating: name) }
    }

    @Test func quotes() throws {
        #expect(try TableName(validating: "app.messages").quoted == "\"app\".\"messages\"")
    }
}

@Suite("Postgres array literals")
struct PostgresArrayTests {
    @Test func escapesQuotesAndBackslashes() {
        #expect(PostgresArray.text(["a\"b", "c\\d", nil, "{x,y}"]) == #"{"a\"b","c\\d",NULL,"{x,y}"}"#)
        #expect(PostgresArray.hex([0x00, 0xff]) == "\\x00ff")
    }
}
