import Foundation
import Testing

/// A daemon with `apply.connections: 2` stopped and replaced by a new one on the same consumer
/// groups, on a standalone broker that is not librdkafka's mock cluster (Tansu 0.6, plain TCP,
/// the daemon on librdkafka 2.16): every region's group must hand all its partitions to the new
/// daemon's shards within seconds, and events published after the restart must be applied.
///
/// Tansu 0.6 keeps a group's leader when that leader leaves while the group is re-forming (after
/// another member left), so new members are told to wait for a departed leader's assignment and
/// no one computes it (docs/performance.md, "The restart stall"). The daemon therefore lets a
/// region's shards leave one after another, each once the group has settled after the previous
/// one left.
@Suite("Restarting a daemon with apply.connections 2 on Tansu", .serialized)
struct ShardRestartTests {
    static let topic = "chat.messages"
    static let partitions = 6
    static let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"]

    /// `count` upserts of messages `first..<first+count`, from a region the daemon does not apply to.
    static func records(from first: Int, count: Int) -> [(String, String)] {
        (first..<(first + count)).map { i in
            let session = "restart-\(i % 12)"
            return (session, String(decoding: upsertEvent(id: String(format: "6a1d3c0e-0000-4000-8000-%012d", i), session: session,
                                                          content: "restart \(i)", origin: "sa-east-1"), as: UTF8.self))
        }
    }

    func writeConfig(dir: String, broker: TansuBroker, dbs: RegionDatabases, httpPort: Int) throws -> String {
        let path = dir + "/config.yaml"
        let props = KafkaTLSTests.tansuProperties.sorted { $0.key < $1.key }.map { "    \($0.key): \"\($0.value)\"" }.joined(separator: "\n")
        try """
            kafka:
              brokers: "\(broker.bootstrap)"
              topic: \(Self.topic)
              group_prefix: rr-restart-\(UUID().uuidString.prefix(8).lowercased())
              properties:
            \(props)
            regions:
            \(Self.regions.map { "  - name: \($0)\n    dsn: \"\(dbs.conninfo($0))\"" }.joined(separator: "\n"))
            apply:
              connections: 2
              max_batch_delay_ms: 20
            http:
              listen: "127.0.0.1:\(httpPort)"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func rowCounts(_ dbs: RegionDatabases) throws -> [String: Int] {
        var out: [String: Int] = [:]
        for r in Self.regions { out[r] = Int(try dbs.query(r, "SELECT count(*) FROM messages").first?[0] ?? "") ?? -1 }
        return out
    }

    /// Region → partitions assigned to any of the daemon's shards, from `/lag`; nil while it does not answer.
    func assigned(_ endpoint: DaemonEndpoint) -> [String: Set<Int>]? { try? endpoint.assignedPartitions() }

    @Test("SIGTERM, then a new daemon on the same groups: every region has all its partitions within 30 s, and new events are applied")
    func restartAssignsEveryRegion() throws {
        let broker = try TansuBroker()
        try broker.createTopic(Self.topic, partitions: Self.partitions)
        let dbs = try RegionDatabases(regions: Self.regions)
        defer { dbs.drop() }
        let dir = NSTemporaryDirectory() + "rr-shard-restart-" + dbs.database
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let httpPort = try freeLoopbackPort()
        let endpoint = DaemonEndpoint(port: httpPort)
        let config = try writeConfig(dir: dir, broker: broker, dbs: dbs, httpPort: httpPort)
        let migrate = try runReplicator(["migrate", "--config", config])
        try #require(migrate.status == 0, "migrate: \(migrate.output)")
        let all = Set(0..<Self.partitions)

        // The first daemon: both shards of every region join, share the partitions and apply.
        try broker.produce(topic: Self.topic, records: Self.records(from: 0, count: 30))
        let first = try Daemon(["run", "--config", config], logPath: dir + "/daemon-1.log", environment: TLSKafkaBroker.librdkafka216)
        defer { first.kill9() }
        try waitUntil("the first daemon to apply 30 events in every region", timeout: .seconds(90)) {
            try rowCounts(dbs).values.allSatisfy { $0 == 30 }
        }
        try waitUntil("the first daemon's shards to own every partition of every region", timeout: .seconds(60)) {
            Self.regions.allSatisfy { assigned(endpoint)?[$0] == all }
        }

        // Stopped as systemd stops it: SIGTERM, drain, exit 0.
        let term = ContinuousClock.now
        first.signal(SIGTERM)
        let firstStatus = try first.wait(timeout: .seconds(40))
        let stopTook = ContinuousClock.now - term
        #expect(firstStatus == 0, "the first daemon exited \(firstStatus):\n\(first.log)")

        // The new daemon, on the same groups.
        let started = ContinuousClock.now
        let second = try Daemon(["run", "--config", config], logPath: dir + "/daemon-2.log", environment: TLSKafkaBroker.librdkafka216)
        defer { second.kill9() }
        var lastSeen: [String: Set<Int>] = [:]
        var settled: [String: Duration] = [:]
        do {
            try waitUntil("every region's partitions assigned to the new daemon", timeout: .seconds(30), interval: .milliseconds(200)) {
                guard let now = assigned(endpoint) else { return false }
                lastSeen = now
                for r in Self.regions where now[r] == all && settled[r] == nil { settled[r] = ContinuousClock.now - started }
                return settled.count == Self.regions.count
            }
        } catch {
            Issue.record("""
                \(error); assigned after 30 s: \(Self.regions.map { "\($0)=\((lastSeen[$0] ?? []).sorted())" }.joined(separator: " "))
                --- first daemon (stopped in \(stopTook)):
                \(first.log.split(separator: "\n").filter { $0.contains("partitions") || $0.contains("stopp") || $0.contains("leav") }.suffix(40).joined(separator: "\n"))
                --- new daemon:
                \(second.log.split(separator: "\n").filter { $0.contains("partitions") || $0.contains("librdkafka") }.suffix(40).joined(separator: "\n"))
                """)
            second.signal(SIGTERM)
            _ = try? second.wait(timeout: .seconds(40))
            return
        }
        print("shard restart: first daemon stopped in \(stopTook); every partition assigned after "
              + Self.regions.map { "\($0) \(settled[$0]!)" }.joined(separator: ", "))

        // Events published after the restart reach every region.
        try broker.produce(topic: Self.topic, records: Self.records(from: 30, count: 30))
        try waitUntil("the new daemon to apply the 30 events published after the restart", timeout: .seconds(30)) {
            try rowCounts(dbs).values.allSatisfy { $0 == 60 }
        }
        second.signal(SIGTERM)
        let secondStatus = try second.wait(timeout: .seconds(40))
        #expect(secondStatus == 0, "the new daemon exited \(secondStatus):\n\(second.log)")
    }
}
