import Foundation
import PostgresClient
import ReplicationCore
import Testing

/// The schema version `migrate` records in `replicator_schema`: a region outside the
/// release's supported range is refused alone; every released schema migrates to the current.
@Suite("Schema versions", .serialized)
struct SchemaVersionTests {
    static let regions = ["us-east-1", "eu-west-1"]

    func series(_ name: String, _ region: String) -> String { "\(name){region=\"\(region)\"}" }

    @Test("A region whose schema is newer than supported is refused alone (/lag, status, metric); the other applies; commands exit 78")
    func newerSchemaRefusesOnlyThatRegion() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(regions: Self.regions, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n", partitions: 2)
        let (target, other) = ("us-east-1", "eu-west-1")
        _ = try h.dbs.query(target, "UPDATE replicator_schema SET schema_version = 99")
        var w = Workload(origins: Self.regions, seed: 4207)
        w.generate(sessions: 5, messages: 60)
        try h.cluster.produce(w.events)
        let daemon = try h.startDaemon()
        let endpoint = DaemonEndpoint(port: port)
        var problem = ""
        try waitUntil("\(target) to show up false with the schema version in /lag", timeout: .seconds(30)) {
            let lag = try endpoint.lag()[target] ?? [:]
            problem = lag["problem"] as? String ?? ""
            return lag["up"] as? Bool == false && problem.contains("schema version 99 is newer")
        }
        try h.waitCaughtUp(other, timeout: .seconds(60))
        #expect(try h.dbs.query(other, "SELECT count(*) FROM messages")[0][0] != "0")
        #expect(try h.dbs.query(target, "SELECT count(*) FROM messages")[0][0] == "0")
        #expect(daemon.isRunning)
        let metrics = try endpoint.metrics()
        #expect(metrics[series(Schema.compatibleMetric, target)] == 0, "\(metrics.filter { $0.key.contains("schema") })")
        #expect(metrics[series(Schema.compatibleMetric, other)] == 1)
        let status = try runReplicator(["status", "--config", h.configPath])
        #expect(status.output.contains("schema version 99 is newer"), "\(status.output)")
        let check = try runReplicator(["check-config", "--config", h.configPath])
        #expect(check.status == 78 && check.output.contains("schema version 99 is newer"), "\(check.output)")
        let dead = try runReplicator(["dead-letters", "list", "--region", target, "--config", h.configPath])
        #expect(dead.status == 78 && dead.output.contains("schema version 99 is newer"), "\(dead.output)")
        let replay = try runReplicator(["replay", "--region", target, "--from-offset", "0", "--config", h.configPath])
        #expect(replay.status == 78 && replay.output.contains("schema version 99 is newer"), "\(replay.output)")
        let verify = try runReplicator(["verify", "--config", h.configPath])
        #expect(verify.status == 78 && verify.output.contains("schema version 99 is newer"), "\(verify.output)")
        print("newer schema: \(target) showed \"\(problem.prefix(160))\"; \(other) applied; check-config \(check.status)")
    }

    @Test("A region whose schema is older than supported: check-config exits 78 naming `region-replicator migrate`; after migrate it is 0")
    func olderSchemaNamesMigrate() throws {
        let h = try Harness(regions: Self.regions, partitions: 1)
        let target = "eu-west-1"
        _ = try h.dbs.query(target, "UPDATE replicator_schema SET schema_version = \(Schema.supportedVersions.lowerBound - 1)")
        let check = try runReplicator(["check-config", "--config", h.configPath])
        #expect(check.status == 78 && check.output.contains("is older than this release supports")
                && check.output.contains("region-replicator migrate --region \(target)"), "\(check.output)")
        let migrate = try runReplicator(["migrate", "--config", h.configPath, "--region", target])
        #expect(migrate.status == 0, "\(migrate.output)")
        let again = try runReplicator(["check-config", "--config", h.configPath])
        #expect(again.status == 0, "\(again.output)")
    }

    @Test("The id trigger calls its function only for a row without message_id: the applier's rows (always with an id) skip it")
    func idTriggerRunsOnlyForRowsWithoutID() throws {
        let h = try Harness(regions: ["us-east-1"], partitions: 1)
        let db = try h.dbs.connect("us-east-1")
        defer { db.close() }
        // Calls of the trigger's function in this transaction (pg_stat_xact_user_functions counts
        // PL/pgSQL calls while track_functions is on); rolled back at the end.
        func calls() throws -> String {
            try db.query("""
                SELECT coalesce((SELECT sum(calls) FROM pg_stat_xact_user_functions WHERE funcname = 'messages_derive_message_id'), 0)::text
                """).rows.first?.first.flatMap { $0 } ?? "?"
        }
        try db.execute("BEGIN")
        defer { try? db.execute("ROLLBACK") }
        try db.execute("SET LOCAL track_functions = 'pl'")
        try db.execute("""
            INSERT INTO messages (message_id, session_id, role, content, region, created_at, version)
            SELECT gen_random_uuid(), 's', 'user', 'with id ' || g, 'us-east-1', now(), 1 FROM generate_series(1, 100) g
            """)
        let withID = try calls()
        try db.execute("INSERT INTO messages (session_id, role, content, region, created_at) VALUES ('s', 'user', 'seed-style', 'us-east-1', now())")
        let afterSeed = try calls()
        let derived = try db.query("SELECT count(*) FROM messages WHERE content = 'seed-style' AND message_id IS NOT NULL").rows.first?.first ?? nil
        #expect(withID == "0", "100 rows with an id called the trigger's function \(withID) times")
        #expect(afterSeed == "1" && derived == "1", "a seed-style row: calls \(afterSeed), rows with a derived id \(derived ?? "nil")")
        print("id trigger: 100 rows with an id -> \(withID) calls; a seed-style row -> \(afterSeed) calls in total, its id derived")
    }

    /// Tests/EndToEndTests/Fixtures/schema-v<N>.sql: every released schema, with rows.
    static func fixtures() throws -> [(version: Int, sql: String)] {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("schema-v") && $0.hasSuffix(".sql") }
        return try names.sorted().map { name in
            let v = Int(name.dropFirst("schema-v".count).dropLast(".sql".count)) ?? -1
            return (v, try String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8))
        }
    }

    @Test("migrate from every released schema (fixtures, with rows) to the current keeps the rows and records the current version")
    func migrateFromEveryReleasedSchema() throws {
        let fixtures = try Self.fixtures()
        #expect(fixtures.map(\.version).contains(Schema.currentVersion), "no fixture for the schema this release ships: \(fixtures.map(\.version))")
        for f in fixtures {
            #expect(Schema.supportedVersions.contains(f.version) || f.version < Schema.supportedVersions.lowerBound)
            // Harness loads the fixture into fresh databases, then runs `region-replicator migrate` (status 0 checked).
            let h = try Harness(regions: ["us-east-1"], partitions: 1, setupSQL: f.sql)
            let r = "us-east-1"
            #expect(try h.dbs.query(r, "SELECT schema_version FROM replicator_schema WHERE table_name = 'messages'") == [[String(Schema.currentVersion)]])
            #expect(try h.dbs.query(r, "SELECT message_id::text, content, version::text FROM messages ORDER BY message_id") == [
                ["00000000-0000-5000-8000-000000000001", "hello from v2", "1"],
                ["00000000-0000-5000-8000-000000000002", "hi", "3"],
            ], "fixture v\(f.version)")
            #expect(try h.dbs.query(r, "SELECT next_offset::text FROM replicator_offsets") == [["17"]])
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_message_tombstones")[0][0] == "1")
            #expect(try h.dbs.query(r, "SELECT count(*) FROM replicator_session_tombstones")[0][0] == "1")
            #expect(try h.dbs.query(r, "SELECT error FROM replicator_dead_letters") == [["invalid JSON"]])
            // The migrated region is one the daemon accepts, and the id trigger works (a seed-style insert).
            let check = try runReplicator(["check-config", "--config", h.configPath])
            #expect(check.status == 0, "fixture v\(f.version): \(check.output)")
            _ = try h.dbs.query(r, "INSERT INTO messages (session_id, role, content, region, created_at) VALUES ('s', 'user', 'x', 'us-east-1', now())")
            print("fixture schema-v\(f.version).sql: migrated to \(Schema.currentVersion), rows kept")
        }
    }
}
