import Foundation
import Testing

/// End-to-end: the real `region-replicator` binary, a Kafka-protocol broker over TCP, one real
/// Postgres server per region. Serialized: some tests stop a shared server.
@Suite("Replication end to end", .serialized)
struct ReplicationTests {
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    @Test("A shuffled workload from three origins leaves every region equal to the reference model")
    func shuffledWorkloadMatchesModel() throws {
        let h = try Harness()
        var w = Workload(origins: Self.regions, seed: 1)
        w.generate(sessions: 40, messages: 2500)
        w.shuffle()
        #expect(w.events.count > 2500)
        try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
            // Every region holds the other regions' messages, never its own.
            #expect(try h.dbs.query(r, "SELECT count(*) FROM messages WHERE region = $1", [r])[0][0] == "0")
            #expect(try h.rows(r).count > 1000)
        }
    }

    @Test("Delivering every event a second time (a replay from offset 0) changes no row")
    func redeliveryChangesNothing() throws {
        let h = try Harness()
        var w = Workload(origins: Self.regions, seed: 2)
        w.generate(sessions: 30, messages: 1500)
        w.shuffle()
        let d = try h.startDaemon()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        let snapshot = try h.regions.map { r in
            try h.dbs.query(r, "SELECT message_id, version, content, replicated_at, xmin::text FROM messages ORDER BY message_id")
        }

        // A replay from offset 0: forget the stored offsets and restart the daemon.
        d.signal(SIGTERM)
        #expect(try d.wait() == 0)
        for r in h.regions { _ = try h.dbs.query(r, "DELETE FROM replicator_offsets") }
        let d2 = try h.startDaemon()
        try h.waitAllCaughtUp()
        let after = try h.regions.map { r in
            try h.dbs.query(r, "SELECT message_id, version, content, replicated_at, xmin::text FROM messages ORDER BY message_id")
        }
        for (i, r) in h.regions.enumerated() {
            #expect(after[i] == snapshot[i], "region \(r): rows changed on re-delivery (content, version, replicated_at or xmin)")
        }
        // The offsets were deleted: they are back at the high watermarks only because the
        // restarted daemon re-read (and re-applied, without effect) every record.
        #expect(d2.isRunning)
    }
}

extension ReplicationTests {
    @Test("Several events of one message in one batch (edits, a deletion, a stale upsert after it) apply as one by one would")
    func severalEventsOfOneMessageInOneBatch() throws {
        // Produced before the daemon starts, all with one key (one partition), so that the
        // daemon's batched consumption hands them to one apply transaction; checked below.
        let h = try Harness(maxBatchEvents: 1000)
        let origin = "us-east-1"
        let session = "s-one-batch"
        let a = "5f7e9c52-0000-4000-8000-00000000000a"  // created, edited, deleted
        let b = "5f7e9c52-0000-4000-8000-00000000000b"  // created, edited twice
        let c = "5f7e9c52-0000-4000-8000-00000000000c"  // created, deleted, then a late upsert of the deleted version
        let d = "5f7e9c52-0000-4000-8000-00000000000d"  // created only
        func delete(_ id: String, version: Int) -> [UInt8] {
            let json: [String: Any] = ["type": "message.deleted", "event_id": UUID().uuidString, "message_id": id,
                                       "session_id": session, "origin_region": origin,
                                       "occurred_at": "2026-11-24T10:05:00Z", "version": version]
            return Array(try! JSONSerialization.data(withJSONObject: json))
        }
        let values: [[UInt8]] = [
            upsertEvent(id: a, session: session, content: "a v1", origin: origin, version: 1),
            upsertEvent(id: b, session: session, content: "b v1", origin: origin, version: 1),
            upsertEvent(id: a, session: session, content: "a v2", origin: origin, version: 2),
            upsertEvent(id: c, session: session, content: "c v1", origin: origin, version: 1),
            delete(a, version: 3),
            upsertEvent(id: b, session: session, content: "b v2", origin: origin, version: 2),
            delete(c, version: 2),
            upsertEvent(id: d, session: session, content: "d v1", origin: origin, version: 1),
            upsertEvent(id: c, session: session, content: "c v2, after its deletion", origin: origin, version: 2),
            upsertEvent(id: b, session: session, content: "b v3", origin: origin, version: 3),
            upsertEvent(id: a, session: session, content: "a v2 again", origin: origin, version: 2),
        ]
        for v in values { try h.cluster.produceRaw(key: session, value: v) }
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.startDaemon()
        try h.waitAllCaughtUp()
        for r in h.regions where r != origin {
            let rows = try h.dbs.query(r, "SELECT message_id::text, content, version, xmin::text FROM messages ORDER BY message_id")
            #expect(rows.map { [$0[0], $0[1], $0[2]] } == [[b, "b v3", "3"], [d, "d v1", "1"]], "region \(r): \(rows)")
            #expect(Set(rows.map { $0[3] }).count == 1, "region \(r): the events were not applied in one batch: \(rows)")
        }
        for r in h.regions {
            let tombstones = try h.dbs.query(r, "SELECT message_id::text, version FROM replicator_message_tombstones ORDER BY message_id")
            #expect(tombstones.map { [$0[0], $0[1]] } == [[a, "3"], [c, "2"]], "region \(r)")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        #expect(try h.rows(origin).isEmpty)
    }

    /// One record of every kind docs/events.md calls a dead letter.
    static let poison: [(name: String, value: [UInt8]?)] = {
        func j(_ s: String) -> [UInt8] { Array(s.utf8) }
        let ok = #""event_id":"e","message_id":"5f7e9c52-0000-4000-8000-000000000001","session_id":"p","role":"user","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00Z""#
        return [
            ("not json", j("this is not json")),
            ("invalid utf-8", [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x3A, 0x31, 0x7D]),
            ("empty value", []),
            ("no value", nil),
            ("json array", j("[1,2,3]")),
            ("json string", j("\"hello\"")),
            ("truncated json", j(#"{"type":"message.upserted","#)),
            ("unknown type", j(#"{"type":"message.exploded",\#(ok),"content":"x","version":1}"#)),
            ("unknown role", j(#"{"type":"message.upserted","event_id":"e","message_id":"5f7e9c52-0000-4000-8000-000000000002","session_id":"p","role":"wizard","content":"x","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00Z","version":1}"#)),
            ("missing content", j(#"{"type":"message.upserted",\#(ok),"version":1}"#)),
            ("missing message_id on delete", j(#"{"type":"message.deleted","event_id":"e","session_id":"p","origin_region":"us-east-1","occurred_at":"2026-11-24T10:00:00Z","version":2}"#)),
            ("missing occurred_at on session delete", j(#"{"type":"session.deleted","event_id":"e","session_id":"p","origin_region":"us-east-1"}"#)),
            ("version as string", j(#"{"type":"message.upserted",\#(ok),"content":"x","version":"1"}"#)),
            ("version zero", j(#"{"type":"message.upserted",\#(ok),"content":"x","version":0}"#)),
            ("version fractional", j(#"{"type":"message.upserted",\#(ok),"content":"x","version":1.5}"#)),
            ("content as number", j(#"{"type":"message.upserted",\#(ok),"content":42,"version":1}"#)),
            ("bad uuid", j(#"{"type":"message.upserted","event_id":"e","message_id":"not-a-uuid","session_id":"p","role":"user","content":"x","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00Z","version":1}"#)),
            ("bad timestamp", j(#"{"type":"message.upserted","event_id":"e","message_id":"5f7e9c52-0000-4000-8000-000000000003","session_id":"p","role":"user","content":"x","origin_region":"us-east-1","created_at":"yesterday","version":1}"#)),
            ("empty session id", j(#"{"session_id":"","role":"user","content":"x","region":"us-east-1","created_at":"2026-11-24T10:00:00"}"#)),
            ("oversize session id", j(#"{"session_id":"\#(String(repeating: "s", count: 300))","role":"user","content":"x","region":"us-east-1","created_at":"2026-11-24T10:00:00"}"#)),
            ("seed event missing region", j(#"{"session_id":"p","role":"user","content":"x","created_at":"2026-11-24T10:00:00"}"#)),
            ("NUL in content", j(#"{"session_id":"p","role":"user","content":"a\u0000b","region":"us-east-1","created_at":"2026-11-24T10:00:00"}"#)),
            ("oversize content", j(#"{"session_id":"p","role":"user","content":"\#(String(repeating: "x", count: 1_048_577))","region":"us-east-1","created_at":"2026-11-24T10:00:00"}"#)),
        ]
    }()

    @Test("Poison records of every kind become one dead letter each per region; consumption never stops")
    func poisonRecordsAreDeadLettered() throws {
        let h = try Harness(maxBatchEvents: 50)
        // A database-side permanent rejection too: eu-west-1 refuses one content by constraint.
        _ = try h.dbs.query("eu-west-1", "ALTER TABLE messages ADD CONSTRAINT no_forbidden CHECK (content <> 'forbidden words')")
        var w = Workload(origins: Self.regions, seed: 3)
        w.generate(sessions: 20, messages: 600)
        w.shuffle()
        try h.startDaemon()
        let valid = w.events
        let third = valid.count / 3
        try h.cluster.produce(Array(valid[..<third]))
        for (i, p) in Self.poison.enumerated() { try h.cluster.produceRaw(key: "poison-\(i)", value: p.value) }
        let forbidden: [String: Any] = ["type": "message.upserted", "event_id": "f", "message_id": "5f7e9c52-0000-4000-8000-0000000000ff",
                                        "session_id": "p-forbidden", "role": "user", "content": "forbidden words",
                                        "origin_region": "us-east-1", "created_at": "2026-11-24T10:00:00Z", "version": 1]
        let forbiddenBytes = Array(try JSONSerialization.data(withJSONObject: forbidden, options: [.sortedKeys]))
        try h.cluster.produceRaw(key: "p-forbidden", value: forbiddenBytes)
        try h.cluster.produce(Array(valid[third...]))
        try h.waitAllCaughtUp()

        for r in h.regions {
            let dead = try h.dbs.query(r, "SELECT encode(payload, 'hex'), error, partition, \"offset\" FROM replicator_dead_letters WHERE payload IS DISTINCT FROM $1::bytea OR payload IS NULL",
                                      ["\\x" + Array("forbidden".utf8).map { String(format: "%02x", $0) }.joined()])
            // A null and an empty value are both "no value" once through librdkafka: compare as "∅".
            let payloads = dead.map { ($0[0] ?? "").isEmpty ? "∅" : $0[0]! }
            var expected = Self.poison.map { p in (p.value ?? []).isEmpty ? "∅" : p.value!.map { String(format: "%02x", $0) }.joined() }
            // Region eu-west-1 also dead-letters the event its CHECK constraint refuses.
            let forbiddenHex = forbiddenBytes.map { String(format: "%02x", $0) }.joined()
            if r == "eu-west-1" { expected.append(forbiddenHex) }
            let missing = Set(expected).subtracting(payloads).map { String($0.prefix(80)) }
            let extra = Set(payloads).subtracting(expected).map { String($0.prefix(80)) }
            #expect(payloads.count == expected.count && missing.isEmpty && extra.isEmpty,
                    "region \(r): \(payloads.count) dead letters, \(expected.count) expected; missing \(missing), extra \(extra); errors: \(dead.map { String(($0[1] ?? "").prefix(100)) })")
            #expect(dead.allSatisfy { !($0[1] ?? "").isEmpty }, "every dead letter says why")
            if r == "eu-west-1" {
                let refused = try h.dbs.query(r, "SELECT error FROM replicator_dead_letters WHERE encode(payload,'hex') = $1", [forbiddenHex])
                #expect(refused.first?[0]?.contains("23514") == true, "the constraint violation is recorded: \(refused)")
            }
        }
        // All valid events applied everywhere (the forbidden one only where allowed).
        for r in h.regions {
            var expected = w.expectedRows(in: r)
            if r == "ap-southeast-1" {
                expected.append(Workload.Row(messageID: "5f7e9c52-0000-4000-8000-0000000000ff", sessionID: "p-forbidden", role: "user",
                                             content: "forbidden words", region: "us-east-1", createdAt: "2026-11-24T10:00:00.000000", version: 1))
            }
            #expect(try h.rows(r) == expected.sorted(), "region \(r) rows differ from the model")
        }
        let reasons = ["invalid_json", "invalid_utf8", "empty_value", "unknown_type", "unknown_role", "missing_field", "wrong_type", "invalid_timestamp", "oversize"]
        let errors = try h.dbs.query("us-east-1", "SELECT error FROM replicator_dead_letters").compactMap { $0[0] }.joined(separator: "\n")
        for reason in reasons { #expect(errors.contains(reason), "no dead letter with reason \(reason): \(errors)") }
    }

    @Test("One region's Postgres stopped mid-stream: the others catch up meanwhile; all equal the model after it returns")
    func regionOutage() throws {
        let h = try Harness()
        var w = Workload(origins: Self.regions, seed: 4)
        w.generate(sessions: 30, messages: 2000)
        w.shuffle()
        let daemon = try h.startDaemon()
        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        let down = "eu-west-1"
        try waitUntil("eu-west-1 to have applied something") { (try h.storedOffsets(down).values.reduce(0, +)) > 0 }
        let server = h.dbs.server(down)
        try server.stopImmediately()
        defer { if !server.isRunning { try? server.start() } }
        try h.cluster.produce(Array(w.events[half...]))
        // The other regions catch up fully while eu-west-1 is down.
        for r in h.regions where r != down { try h.waitCaughtUp(r) }
        for r in h.regions where r != down {
            #expect(try h.rows(r) == w.expectedRows(in: r), "region \(r) did not catch up while \(down) was down")
        }
        #expect(daemon.isRunning, "the daemon must keep running while a region is down")
        try waitUntil("the daemon to log retries for \(down)") { daemon.log.contains("region=\(down)") && daemon.log.contains("retrying") }
        try server.start()
        try h.waitCaughtUp(down)
        try expectRegionsMatchModel(h, w)
        #expect(daemon.log.contains("region recovered") || daemon.log.contains("connected to the region's database"))
    }

    @Test("SIGKILL mid-batch, several times, while events flow: nothing lost, nothing regressed")
    func sigkillWhileEventsFlow() throws {
        let h = try Harness(maxBatchEvents: 200)
        var w = Workload(origins: Self.regions, seed: 5)
        w.generate(sessions: 30, messages: 3000)
        w.shuffle()
        let chunks = stride(from: 0, to: w.events.count, by: w.events.count / 6 + 1).map {
            Array(w.events[$0..<min($0 + w.events.count / 6 + 1, w.events.count)])
        }
        var daemon = try h.startDaemon()
        var kills = 0
        for (i, chunk) in chunks.enumerated() {
            try h.cluster.produce(chunk)
            if i < 4 {
                // Kill as soon as this chunk is being applied somewhere (mid-stream, likely mid-batch).
                let before = try h.regions.map { try h.storedOffsets($0).values.reduce(0, +) }
                try waitUntil("progress before kill \(i + 1)") {
                    try zip(h.regions, before).contains { r, b in try h.storedOffsets(r).values.reduce(0, +) > b }
                }
                daemon.kill9()
                kills += 1
                daemon = try h.startDaemon()
            }
        }
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        #expect(kills == 4)
        for r in h.regions {
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
    }
}
