import Foundation
import PostgresClient

/// A synthetic chat history and the events that describe it, plus an independent reference
/// model of the apply rules (written from the words of docs/events.md, sharing no code with the daemon).
struct Workload {
    struct Event {
        var json: [String: Any]
        var key: String
    }

    /// One expected row, as compared against `messages`.
    struct Row: Hashable, Comparable, CustomStringConvertible {
        var messageID: String  // "seed" for seed-style rows (derived id checked elsewhere)
        var sessionID: String
        var role: String
        var content: String
        var region: String
        var createdAt: String  // UTC, microseconds: 2026-11-24T10:00:00.123456
        var version: Int

        static func < (a: Row, b: Row) -> Bool { a.description < b.description }
        var description: String { "\(messageID)|\(sessionID)|\(role)|\(content.prefix(40))|\(region)|\(createdAt)|v\(version)" }
    }

    private(set) var events: [Event] = []
    // Model inputs.
    private var upserts: [(key: String, row: Row)] = []  // key: message id or seed natural key
    private var messageTombstones: [String: Int] = [:]
    private var sessionTombstones: [String: String] = [:]  // session → occurred_at (UTC text)

    let origins: [String]
    private var rng: SplitMix64

    init(origins: [String], seed: UInt64) {
        self.origins = origins
        self.rng = SplitMix64(seed: seed)
    }

    // MARK: - Generation

    private static let base = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-17

    /// `2026-…T…:…:….uuuuuu` (UTC, no offset) for `micros` after the base time.
    static func utcText(_ micros: Int64) -> String {
        let seconds = Int64(base.timeIntervalSince1970) + micros / 1_000_000
        let frac = micros % 1_000_000
        var t = time_t(seconds)
        var tm = tm()
        gmtime_r(&t, &tm)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%06d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec, Int(frac))
    }

    /// Renders a UTC text in one of several equivalent RFC 3339 forms.
    mutating func rfc3339(_ utc: String) -> String {
        switch rng.next() % 3 {
        case 0: return utc + "Z"
        case 1: return utc + "+00:00"
        default:
            // The same instant written with a +02:00 offset.
            let micros = Self.micros(utc) + 7_200_000_000
            return Self.utcText(micros) + "+02:00"
        }
    }

    static func micros(_ utc: String) -> Int64 {
        // Inverse of utcText for strings it produced.
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        let date = f.date(from: String(utc.prefix(19)))!
        return Int64(date.timeIntervalSince1970 - base.timeIntervalSince1970) * 1_000_000 + Int64(utc.suffix(6))!
    }

    /// Generates a history: messages from every origin, edits, deletions, session erasures
    /// and seed-style events; some events are duplicated (at-least-once delivery).
    /// - Parameter erasureEvery: erase a session after every that many messages (default: four
    ///   erasures in the whole history).
    mutating func generate(sessions: Int, messages: Int, contentPrefix: String = "", erasureEvery: Int? = nil) {
        var clock: Int64 = 0
        var live: [(id: String, session: String, origin: String, version: Int, created: String, role: String)] = []
        let roles = ["system", "user", "assistant", "tool"]
        for i in 0..<messages {
            clock += Int64(rng.next() % 5_000) + 1
            let session = "sess-\(contentPrefix)\(rng.next() % UInt64(sessions))"
            let origin = origins[Int(rng.next() % UInt64(origins.count))]
            let created = Self.utcText(clock)
            let role = roles[Int(rng.next() % 4)]
            if rng.next() % 5 == 0 {
                // The article's producer: no type, no id, no version, no offset on the timestamp.
                let content = "seed \(contentPrefix)\(i) «\(origin)» ✓"
                let json: [String: Any] = ["session_id": session, "role": role, "content": content, "region": origin, "created_at": created]
                events.append(Event(json: json, key: session))
                if rng.next() % 4 == 0 { events.append(Event(json: json, key: session)) }  // re-delivered
                upserts.append(("seed|\(session)|\(origin)|\(created)|\(role)|\(content)",
                                Row(messageID: "seed", sessionID: session, role: role, content: content, region: origin,
                                    createdAt: created, version: 1)))
                continue
            }
            let id = UUID().uuidString.lowercased()
            var version = 1
            var content = "message \(contentPrefix)\(i) from \(origin) \"quoted\" \\ back{slash},"
            func upsert(_ w: inout Workload) {
                let json: [String: Any] = ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": id,
                                           "session_id": session, "role": role, "content": content, "origin_region": origin,
                                           "created_at": w.rfc3339(created), "version": version]
                w.events.append(Event(json: json, key: session))
                w.upserts.append((id, Row(messageID: id, sessionID: session, role: role, content: content, region: origin,
                                          createdAt: created, version: version)))
            }
            upsert(&self)
            if rng.next() % 10 == 0 { upsert(&self) }  // duplicate delivery
            let edits = rng.next() % 6 == 0 ? Int(rng.next() % 3) + 1 : 0
            for _ in 0..<edits {
                version += 1
                content = "edited v\(version) of \(contentPrefix)\(i)"
                upsert(&self)
            }
            if rng.next() % 8 == 0 {
                version += 1
                clock += 1
                let json: [String: Any] = ["type": "message.deleted", "event_id": UUID().uuidString, "message_id": id,
                                           "session_id": session, "origin_region": origin,
                                           "occurred_at": rfc3339(Self.utcText(clock)), "version": version]
                events.append(Event(json: json, key: session))
                messageTombstones[id] = max(messageTombstones[id] ?? 0, version)
            } else {
                live.append((id, session, origin, version, created, role))
            }
            if erasureEvery.map({ i % $0 == $0 - 1 }) ?? (i % (messages / 4 + 1) == messages / 8) {
                // Erase a session: messages created at or before now go; later ones stay.
                let victim = "sess-\(contentPrefix)\(rng.next() % UInt64(sessions))"
                let at = Self.utcText(clock)
                let json: [String: Any] = ["type": "session.deleted", "event_id": UUID().uuidString, "session_id": victim,
                                           "origin_region": origins[Int(rng.next() % UInt64(origins.count))],
                                           "occurred_at": rfc3339(at)]
                events.append(Event(json: json, key: victim))
                if let old = sessionTombstones[victim] { sessionTombstones[victim] = max(old, at) } else { sessionTombstones[victim] = at }
            }
        }
    }

    mutating func shuffle() { events.shuffle(using: &rng) }

    // MARK: - The reference model

    /// The rows region `target` must hold after applying every event (the apply rules of docs/events.md).
    func expectedRows(in target: String, applyToOrigin: Bool = false) -> [Row] {
        var best: [String: Row] = [:]
        for (key, row) in upserts where applyToOrigin || row.region != target {
            if let b = best[key], b.version >= row.version { continue }
            best[key] = row
        }
        return best.compactMap { key, row -> Row? in
            if let t = messageTombstones[key], row.version <= t { return nil }
            if let s = sessionTombstones[row.sessionID], row.createdAt <= s { return nil }
            return row
        }.sorted()
    }
}

/// Deterministic PRNG for reproducible workloads.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Workload.Row {
    /// Every row of `messages` on `db` (seed-style rows get the id "seed": their derived id is
    /// checked by the decoder's tests), sorted.
    static func all(in db: PostgresConnection) throws -> [Workload.Row] {
        try db.query("""
            SELECT message_id::text, session_id, role, content, region,
                   to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), version
            FROM messages
            """).rows.map { r in
            Workload.Row(messageID: r[3]!.hasPrefix("seed ") ? "seed" : r[0]!, sessionID: r[1]!, role: r[2]!,
                         content: r[3]!, region: r[4]!, createdAt: r[5]!, version: Int(r[6]!)!)
        }.sorted()
    }
}
