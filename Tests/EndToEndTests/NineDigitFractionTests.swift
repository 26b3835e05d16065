import Foundation
import ReplicationCore
import Testing

/// Timestamps with more than six fraction digits (Java's `Instant.toString()` writes nine): the
/// decoder must land on the microsecond Postgres stores for the same text, or the origin's row
/// (written by the application's own INSERT) and its replicas differ.
@Suite("Nine-digit fractions: the decoder rounds as Postgres does", .serialized)
struct NineDigitFractionTests {
    /// Fraction texts around every rounding edge: ties (…5, …50, …500), just below and above
    /// them, carries into the next second, day and year, and random ones.
    static func fractions() -> [String] {
        var rng = SplitMix64(seed: 9)
        var prefixes = ["000000", "000001", "000002", "000003", "123456", "499999", "500000", "999998", "999999"]
        for _ in 0..<2_500 { prefixes.append(String(format: "%06d", Int(rng.next() % 1_000_000))) }
        var out: [String] = []
        for p in prefixes {
            for s in ["5", "50", "500", "499", "501", "4", "6", "000", "001", "999", "49", "51"] { out.append(p + s) }
            out.append(p + String(format: "%03d", Int(rng.next() % 1000)))
        }
        // Fewer than six digits, and shorter prefixes with a tie digit.
        for d in 1...5 {
            for _ in 0..<200 { out.append(String(format: "%0\(d)d", Int(rng.next() % UInt64(pow(10, Double(d)))))) }
        }
        for p in 0..<1_000 { out.append(String(format: "%03d", p) + "0005") }
        return out
    }

    static func texts() -> [String] {
        var out: [String] = []
        let seconds = ["2026-11-24T10:00:00", "2026-12-31T23:59:59", "1999-12-31T23:59:59", "9999-12-31T23:59:59", "0001-01-01T00:00:00"]
        for (i, f) in fractions().enumerated() {
            let base = seconds[i % seconds.count]
            let zone = ["Z", "+02:00", "", "-05:30"][i % 4]
            out.append("\(base).\(f)\(zone)")
        }
        return out
    }

    @Test("Every text of ~35,000 with 1–9 fraction digits: Timestamp(rfc3339:) equals the microsecond Postgres stores")
    func decoderMatchesPostgres() throws {
        let dbs = try RegionDatabases(regions: ["oracle"])
        defer { dbs.drop() }
        let texts = Self.texts()
        let db = try dbs.connect("oracle")
        defer { db.close() }
        try db.execute("SET TimeZone = 'UTC'")
        let literal = "{" + texts.map { "\"\($0)\"" }.joined(separator: ",") + "}"
        let rows = try db.query("""
            SELECT (extract(epoch FROM t::timestamptz) * 1000000)::bigint
            FROM unnest($1::text[]) WITH ORDINALITY AS x(t, i) ORDER BY i
            """, [literal]).rows
        #expect(rows.count == texts.count)
        var mismatches: [String] = []
        for (text, row) in zip(texts, rows) {
            let postgres = row[0].flatMap { Int64($0) }
            let ours = Timestamp(rfc3339: text)?.microseconds
            if ours != postgres { mismatches.append("\(text): Postgres \(postgres.map(String.init) ?? "nil"), decoder \(ours.map(String.init) ?? "nil")") }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(texts.count) differ, e.g. \(mismatches.prefix(8))")
    }

    @Test("The application INSERTs nine-digit timestamps locally and publishes them (seed-style and typed): every region holds identical rows, ids included; verify exits 0")
    func applicationRowsAndReplicasAgree() throws {
        let h = try Harness()
        try h.startDaemon()
        let created = ["2026-11-29T08:00:00.123456789", "2026-11-29T08:00:01.000000500", "2026-11-29T08:00:02.000001500",
                       "2026-11-29T08:00:03.999999500", "2026-11-29T08:00:04.000002500Z", "2026-11-29T08:00:05.123456499Z",
                       "2026-11-29T23:59:59.9999995Z", "2026-11-29T10:00:06.987654321+02:00"]
        for (i, region) in h.regions.enumerated() {
            let db = try h.dbs.connect(region)
            defer { db.close() }
            for (k, at) in created.enumerated() {
                let session = "nine-\(region)-\(k % 3)"
                // The article's write path: a plain INSERT of the dict, then the same dict published.
                let content = "seed-style \(k) from \(region)"
                try db.query("INSERT INTO messages (session_id, role, content, region, created_at) VALUES ($1, 'user', $2, $3, $4)",
                             [session, content, region, at])
                try h.cluster.produceRaw(key: session, value: Array(try JSONSerialization.data(withJSONObject: [
                    "session_id": session, "role": "user", "content": content, "region": region, "created_at": at])))
                // A typed event of a row the application stored itself, with its own id.
                let id = UUID().uuidString.lowercased()
                try db.query("INSERT INTO messages (message_id, session_id, role, content, region, created_at, version) VALUES ($1, $2, 'assistant', $3, $4, $5, 1)",
                             [id, session, "typed \(k) from \(region) \(i)", region, at])
                try h.cluster.produceRaw(key: session, value: Array(try JSONSerialization.data(withJSONObject: [
                    "type": "message.upserted", "event_id": UUID().uuidString, "message_id": id, "session_id": session,
                    "role": "assistant", "content": "typed \(k) from \(region) \(i)", "origin_region": region,
                    "created_at": at, "version": 1])))
            }
        }
        try h.cluster.producer.flush(timeoutMs: 30_000)
        try h.waitAllCaughtUp()
        let rows = try h.regions.map { r in try h.dbs.query(r, "SELECT \(AdoptionTests.compared) FROM messages ORDER BY message_id") }
        #expect(rows[0].count == 2 * created.count * h.regions.count, "\(h.regions[0]) holds \(rows[0].count) rows")
        for (i, r) in h.regions.enumerated() {
            let differing = Set(rows[i].map { $0.map { $0 ?? "" }.joined(separator: "|") })
                .symmetricDifference(rows[0].map { $0.map { $0 ?? "" }.joined(separator: "|") })
            #expect(differing.isEmpty, "region \(r) differs from \(h.regions[0]) in \(differing.count) rows, e.g. \(differing.sorted().prefix(4))")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_dead_letters")[0][0] == "0")
        }
        let verify = try h.verify([])
        #expect(verify.status == 0, "verify exited \(verify.status): \(verify.output.suffix(3000))")
    }
}
