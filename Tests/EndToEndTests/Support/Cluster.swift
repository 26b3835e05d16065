import Foundation
import Testing
import KafkaClient

/// A Kafka-protocol broker for one test (librdkafka's mock cluster: real brokers on
/// 127.0.0.1 TCP ports) with a topic and a producer. The brokers run in the test process, or,
/// with `standaloneIn:`, in a process of their own (``BrokerProcess``) that faults can target.
final class TestCluster: @unchecked Sendable {
    private let inProcess: KafkaMockCluster?
    let process: BrokerProcess?
    let topic: String
    let partitions: Int
    let bootstrap: String
    private var producerHandle: KafkaProducer?
    var producer: KafkaProducer { producerHandle! }

    /// - Parameter brokerEnvironment: more environment variables of the standalone broker
    ///   process (e.g. `LD_LIBRARY_PATH` to run it on a newer librdkafka's mock cluster).
    init(partitions: Int = 6, standaloneIn dir: String? = nil, brokerEnvironment: [String: String] = [:]) throws {
        topic = "chat.messages"
        self.partitions = partitions
        if let dir {
            inProcess = nil
            process = try BrokerProcess(topic: topic, partitions: partitions, dir: dir, environment: brokerEnvironment)
            bootstrap = process!.bootstrap
        } else {
            let cluster = try KafkaMockCluster(brokers: 3)
            try cluster.createTopic(topic, partitions: partitions)
            inProcess = cluster
            process = nil
            bootstrap = cluster.bootstrapServers
        }
        // A standalone broker is taken down on purpose: its connection errors are expected noise.
        producerHandle = try KafkaProducer(configuration: KafkaConfiguration([
            ("bootstrap.servers", bootstrap), ("log_level", dir == nil ? "3" : "2")]))
    }

    // The producer goes first, so it does not log the brokers vanishing under it.
    deinit { producerHandle = nil }

    /// Delays every response of every in-process broker by `milliseconds` (0: none).
    func setRoundTripTime(milliseconds: Int) {
        for id in 1...Int32(3) { inProcess?.setRoundTripTime(id, milliseconds: milliseconds) }
    }

    func produce(_ events: [Workload.Event]) throws {
        for e in events {
            let data = try JSONSerialization.data(withJSONObject: e.json)
            try producer.produce(topic: topic, key: Array(e.key.utf8), value: Array(data))
        }
        try producer.flush(timeoutMs: 60_000)
    }

    func produceRaw(key: String, value: [UInt8]?) throws {
        try producer.produce(topic: topic, key: Array(key.utf8), value: value)
    }

    /// The high watermark of every partition.
    func highWatermarks() throws -> [Int32: Int64] {
        var out: [Int32: Int64] = [:]
        for p in 0..<Int32(partitions) {
            out[p] = try producer.queryWatermarks(topic: topic, partition: p, timeoutMs: 10_000).high
        }
        return out
    }
}

/// Everything one end-to-end test runs against: region databases, a cluster, a config file.
final class Harness: @unchecked Sendable {
    let regions: [String]
    let dbs: RegionDatabases
    let cluster: TestCluster
    let dir: String
    let configPath: String
    var daemons: [Daemon] = []

    /// Consumer-group timing of most tests: a dead member is noticed within 6 s.
    static let fastGroupProperties = ["session.timeout.ms": "6000", "heartbeat.interval.ms": "500"]

    /// - Parameters:
    ///   - standaloneBroker: run the brokers in a process of their own (``BrokerProcess``).
    ///   - kafkaProperties: librdkafka properties besides `log_level` (`[:]`: the daemon's defaults).
    ///   - applyConfig: more keys of the `apply:` section (YAML lines indented by two spaces).
    ///     Without a `connections:` line the harness writes `connections: 1` (the daemon's default
    ///     is 2): most tests count log lines, loop names and group members of one pipeline per
    ///     region, and stopping a daemon with several shards per region waits for the group.
    ///   - setupSQL: run in every region's database before `migrate` (e.g. an existing table).
    init(regions: [String] = ["us-east-1", "eu-west-1", "ap-southeast-1"], maxBatchEvents: Int = 500,
         extraConfig: String = "", partitions: Int = 6, standaloneBroker: Bool = false,
         kafkaProperties: [String: String] = Harness.fastGroupProperties,
         applyConfig: String = "", setupSQL: String? = nil, brokerEnvironment: [String: String] = [:]) throws {
        self.regions = regions
        dbs = try RegionDatabases(regions: regions)
        if let setupSQL {
            for r in regions {
                let c = try dbs.connect(r)
                defer { c.close() }
                try c.execute(setupSQL)
            }
        }
        dir = NSTemporaryDirectory() + "rr-e2e-" + dbs.database
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        cluster = try TestCluster(partitions: partitions, standaloneIn: standaloneBroker ? dir : nil,
                                  brokerEnvironment: brokerEnvironment)
        configPath = dir + "/config.yaml"
        var yaml = """
            kafka:
              brokers: "\(cluster.bootstrap)"
              topic: \(cluster.topic)
              group_prefix: rr-test
              properties:
                log_level: "4"

            """
        for (k, v) in kafkaProperties.sorted(by: { $0.key < $1.key }) { yaml += "    \(k): \"\(v)\"\n" }
        yaml += "regions:\n"
        for r in regions { yaml += "  - name: \(r)\n    dsn: \"\(dbs.conninfo(r))\"\n" }
        yaml += """
            apply:
              max_batch_events: \(maxBatchEvents)
              max_batch_delay_ms: 20
            \(applyConfig.contains("connections:") ? "" : "  connections: 1\n")\(applyConfig)
            log:
              level: info

            """ + extraConfig
        if !extraConfig.contains("http:") {
            // A free port per daemon: never the default 9466, which another daemon may hold.
            yaml += "http:\n  listen: \"127.0.0.1:\(try freeLoopbackPort())\"\n"
        }
        try yaml.write(toFile: configPath, atomically: true, encoding: .utf8)
        let (status, out) = try runReplicator(["migrate", "--config", configPath])
        guard status == 0 else { throw TestSetupError("migrate failed (\(status)): \(out)") }
    }

    /// Starts `region-replicator run` on the harness's config (`environment` adds overrides,
    /// e.g. `REGION_REPLICATOR_HTTP_LISTEN` for a second instance).
    @discardableResult
    func startDaemon(environment: [String: String] = [:], binary: String = TestEnvironment.replicatorBinary) throws -> Daemon {
        let d = try Daemon(["run", "--config", configPath], logPath: dir + "/daemon-\(daemons.count).log",
                           environment: environment, binary: binary)
        daemons.append(d)
        return d
    }

    /// Starts a further instance on the harness's config, serving HTTP on `httpPort`.
    func startInstance(httpPort: Int, binary: String = TestEnvironment.replicatorBinary) throws -> Daemon {
        try startDaemon(environment: ["REGION_REPLICATOR_HTTP_LISTEN": "127.0.0.1:\(httpPort)"], binary: binary)
    }

    /// Waits until instances `a` and `b` (their `/lag`) each own a share of every region's
    /// partitions: not empty, disjoint, together all of them.
    func waitForSplit(_ a: DaemonEndpoint, _ b: DaemonEndpoint, _ what: String = "both instances to own a share of every region's partitions",
                      timeout: Duration = .seconds(60)) throws {
        let all = Set(0..<cluster.partitions)
        try waitUntil(what, timeout: timeout) {
            let (x, y) = (try a.assignedPartitions(), try b.assignedPartitions())
            return regions.allSatisfy { r in
                let (p, q) = (x[r] ?? [], y[r] ?? [])
                return !p.isEmpty && !q.isEmpty && p.isDisjoint(with: q) && p.union(q) == all
            }
        }
    }

    /// Waits until the instance behind `endpoint` owns every partition of every region.
    func waitForAllPartitions(_ endpoint: DaemonEndpoint, _ what: String, timeout: Duration = .seconds(60)) throws {
        let all = Set(0..<cluster.partitions)
        try waitUntil(what, timeout: timeout) {
            let x = try endpoint.assignedPartitions()
            return regions.allSatisfy { x[$0] == all }
        }
    }

    /// Rows of `messages` in `region`, comparable with ``Workload/expectedRows(in:applyToOrigin:)``.
    func rows(_ region: String) throws -> [Workload.Row] {
        let db = try dbs.connect(region)
        defer { db.close() }
        return try Workload.Row.all(in: db)
    }

    /// Stored next offsets of `region`'s consumer group.
    func storedOffsets(_ region: String) throws -> [Int32: Int64] {
        var out: [Int32: Int64] = [:]
        for r in try dbs.query(region, "SELECT partition, next_offset FROM replicator_offsets WHERE consumer_group = $1",
                               ["rr-test.\(region)"]) {
            out[Int32(r[0]!)!] = Int64(r[1]!)!
        }
        return out
    }

    /// Waits until `region` has stored offsets equal to the high watermarks.
    func waitCaughtUp(_ region: String, timeout: Duration = .seconds(120)) throws {
        let high = try cluster.highWatermarks().filter { $0.value > 0 }
        try waitUntil("region \(region) to store offsets \(high.sorted { $0.key < $1.key })", timeout: timeout) {
            let stored = try storedOffsets(region)
            return high.allSatisfy { stored[$0.key] == $0.value }
        }
    }

    func waitAllCaughtUp(timeout: Duration = .seconds(120)) throws {
        for r in regions { try waitCaughtUp(r, timeout: timeout) }
    }

    func daemonLogs() -> String { daemons.map(\.log).joined(separator: "\n---\n") }

    deinit {
        for d in daemons { d.kill9() }
        dbs.drop()
        try? FileManager.default.removeItem(atPath: dir)
    }
}

/// Checks every region of `h` against the model, naming what differs.
func expectRegionsMatchModel(_ h: Harness, _ w: Workload, regions: [String]? = nil,
                             sourceLocation: SourceLocation = #_sourceLocation) throws {
    for r in regions ?? h.regions {
        let actual = try h.rows(r)
        let expected = w.expectedRows(in: r)
        let missing = Set(expected).subtracting(actual)
        let extra = Set(actual).subtracting(expected)
        #expect(missing.isEmpty && extra.isEmpty && actual.count == expected.count,
                "region \(r): \(missing.count) rows missing (e.g. \(missing.sorted().prefix(3))), \(extra.count) extra (e.g. \(extra.sorted().prefix(3))), \(actual.count) rows vs \(expected.count) expected",
                sourceLocation: sourceLocation)
    }
}
