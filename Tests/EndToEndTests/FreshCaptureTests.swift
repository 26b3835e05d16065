import Foundation
import KafkaClient
import PostgresClient
import ReplicationCore
import Testing

/// End-to-end: a token-less `GET /fresh` while the regions capture their own writes (the
/// application only INSERTs locally; the daemon publishes from each region's slot). A `fresh`
/// answer for another region must never come before the write is readable there.
@Suite("Read-your-writes under capture: /fresh", .serialized)
struct FreshCaptureTests {
    static let origin = "us-east-1"
    static let other = "eu-west-1"

    func harness() throws -> (Harness, DaemonEndpoint, String) {
        let port = try HTTPProbe.freePort()
        let prefix = "rr_fc_" + UUID().uuidString.prefix(8).lowercased()
        let h = try Harness(maxBatchEvents: 500, extraConfig: """
            http:
              listen: "127.0.0.1:\(port)"
            capture:
              enabled: true
              slot_prefix: \(prefix)

            """, standaloneBroker: true)
        return (h, DaemonEndpoint(port: port), prefix)
    }

    func start(_ h: Harness, _ e: DaemonEndpoint) throws {
        try h.startDaemon()
        try waitUntil("/health/ready to answer 200 (daemon log: \(h.daemonLogs().suffix(2000)))", timeout: .seconds(60)) {
            try e.get("/health/ready").status == 200
        }
    }

    func fresh(_ e: DaemonEndpoint, _ query: String) throws -> (status: Int, body: [String: Any]) {
        let r = try HTTPProbe.get(port: e.port, "/fresh?" + query, timeout: 15)
        return (r.status, (try? r.json()) ?? ["raw": r.text])
    }

    func insert(_ db: PostgresConnection, session: String) throws -> String {
        let id = UUID().uuidString.lowercased()
        try db.query("INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, $2, 'user', $3, $4, now())",
                     [id, session, "fresh under capture \(id)", Self.origin])
        return id
    }

    func holds(_ h: Harness, _ region: String, _ id: String) throws -> Bool {
        try h.dbs.query(region, "SELECT count(*) FROM messages WHERE message_id = $1::uuid", [id]).first?.first == "1"
    }

    @Test("a local INSERT in a capturing region, then /fresh for another region at once: whenever fresh, the row is readable there")
    func noFalseFresh() throws {
        let (h, e, prefix) = try harness()
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        try start(h, e)
        let db = try h.dbs.connect(Self.origin)
        defer { db.close() }
        // Every slot streams (the first answer may wait for the captures to start).
        #expect(try fresh(e, "region=\(Self.other)&wait_ms=20000").status == 200)
        var answers: [Int: Int] = [:]
        var falseFresh: [String] = []
        for trial in 0..<30 {
            let id = try insert(db, session: "trial-\(trial % 5)")
            // 0 ms: the first measurement (the row cannot be on the topic yet); longer: waits.
            let wait = [0, 300, 5000][trial % 3]
            let answer = try fresh(e, "region=\(Self.other)&wait_ms=\(wait)")
            answers[answer.status, default: 0] += 1
            if try answer.status == 200 && !holds(h, Self.other, id) { falseFresh.append("\(id) (wait_ms \(wait)): \(answer.body)") }
            if answer.status != 200 {
                #expect(answer.status == 503 && answer.body["fresh"] as? Bool == false, "\(answer.body)")
            }
        }
        #expect(falseFresh.isEmpty, "fresh before the row was readable: \(falseFresh)")
        // The long waits do become fresh (capture confirms, then the region applies).
        #expect(answers[200, default: 0] >= 10, "answers by status: \(answers) (log: \(h.daemonLogs().suffix(2000)))")

        // A capture session token (the region's WAL position after the commit): fresh only once
        // the row is readable; one of another cluster or topic is refused.
        let c = try KafkaConsumer(configuration: KafkaConfiguration([("bootstrap.servers", h.cluster.bootstrap), ("log_level", "2")]),
                                  groupID: nil)
        defer { c.close() }
        guard let cluster = c.clusterID(timeoutMs: 10_000) else { throw TestSetupError("no cluster id") }
        let scope = FreshToken.scope(clusterID: cluster, topic: h.cluster.topic)
        for trial in 0..<5 {
            let id = try insert(db, session: "token-\(trial)")
            let lsn = try LSN(text: db.query("SELECT pg_current_wal_lsn()::text").rows[0][0]!)!
            let token = FreshCaptureToken(scope: scope, region: Self.origin, lsn: lsn).encoded
            let answer = try fresh(e, "region=\(Self.other)&wait_ms=\(trial == 0 ? 0 : 5000)&token=\(token)")
            if try answer.status == 200 && !holds(h, Self.other, id) { falseFresh.append("token \(id): \(answer.body)") }
            if trial > 0 { #expect(answer.status == 200 && answer.body["token"] as? Bool == true, "\(answer.body)") }
            // The writing region holds its own write.
            #expect(try fresh(e, "region=\(Self.origin)&token=\(token)").status == 200)
        }
        #expect(falseFresh.isEmpty, "fresh before the row was readable: \(falseFresh)")
        let foreign = FreshCaptureToken(scope: FreshToken.scope(clusterID: "another", topic: h.cluster.topic), region: Self.origin,
                                        lsn: LSN(1)).encoded
        #expect(try fresh(e, "region=\(Self.other)&wait_ms=5000&token=\(foreign)").status == 400)
        let unknown = FreshCaptureToken(scope: scope, region: "mars-1", lsn: LSN(1)).encoded
        #expect(try fresh(e, "region=\(Self.other)&token=\(unknown)").status == 400)
    }

    @Test("a capturing origin whose Postgres is stopped: other regions are not fresh (origin_down) within wait_ms")
    func originDown() throws {
        let (h, e, prefix) = try harness()
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        try start(h, e)
        #expect(try fresh(e, "region=\(Self.other)&wait_ms=20000").status == 200)
        let server = h.dbs.server(Self.origin)
        try server.stopImmediately()
        defer { if !server.isRunning { try? server.start() } }
        let started = ContinuousClock.now
        let down = try fresh(e, "region=\(Self.other)&wait_ms=1500")
        let took = ContinuousClock.now - started
        #expect(down.status == 503 && down.body["fresh"] as? Bool == false, "\(down.body)")
        #expect(down.body["reason"] as? String == "origin_down", "\(down.body)")
        #expect(took < .seconds(4), "answered after \(took)")
        try server.start()
        #expect(try fresh(e, "region=\(Self.other)&wait_ms=20000").status == 200)
    }
}
