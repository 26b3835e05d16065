import Foundation
import PostgresClient
import ReplicationCore
import Testing

/// Capture's observability and robustness end to end: the retained WAL of each capturing
/// region's slot (on the server and in the metric) stays bounded when nothing is to be
/// published, grows while Kafka is away and falls once it is back; several instances take turns
/// on a region's slot. Three real Postgres servers and a real broker process.
@Suite("Capture observability", .serialized)
struct CaptureObservabilityTests {
    static let mib: Int64 = 1 << 20

    /// A capturing harness whose daemon serves HTTP on a port of the test's choosing.
    static func harness(regions: [String] = ["us-east-1", "eu-west-1", "ap-southeast-1"], standaloneBroker: Bool = false)
        throws -> (Harness, DaemonEndpoint, prefix: String) {
        let prefix = "rr_cap_" + UUID().uuidString.prefix(8).lowercased()
        let port = try HTTPProbe.freePort()
        let h = try Harness(regions: regions, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\ncapture:\n  enabled: true\n  slot_prefix: \(prefix)\n",
                            standaloneBroker: standaloneBroker)
        return (h, DaemonEndpoint(port: port), prefix)
    }

    static func slot(_ prefix: String, _ region: String) -> String { prefix + "_" + region.replacingOccurrences(of: "-", with: "_") }

    /// The slot's retained WAL on the server (`pg_replication_slots`), bytes.
    static func retained(_ h: Harness, _ region: String, _ slot: String) throws -> Int64 {
        let r = try h.dbs.query(region, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint::text FROM pg_replication_slots WHERE slot_name = $1", [slot])
        return Int64(r.first?.first.flatMap { $0 } ?? "") ?? -1
    }

    static func metric(_ e: DaemonEndpoint, _ name: String, _ region: String, _ extra: String = "") throws -> Double? {
        try e.metrics()["\(name){region=\"\(region)\"\(extra)}"]
    }

    static func currentLSN(_ h: Harness, _ region: String) throws -> String {
        try h.dbs.query(region, "SELECT pg_current_wal_lsn()::text")[0][0]!
    }

    /// Moves each region's slot's `restart_lsn` as far as the server will: a CHECKPOINT logs the
    /// running transactions, which is where a logical slot's restart point may advance.
    static func checkpoint(_ h: Harness) throws {
        for r in h.regions { _ = try h.dbs.query(r, "CHECKPOINT") }
    }

    @Test("retained WAL stays bounded for regions whose stream holds only echoes, or only another table's writes (server and metric)")
    func retainedWALStaysBounded() throws {
        let (h, e, prefix) = try Self.harness()
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        let writer = try h.dbs.connect("us-east-1"), other = try h.dbs.connect("ap-southeast-1")
        defer { writer.close(); other.close() }
        try other.execute("CREATE TABLE unrelated (id int, pad text)")
        let bound = 16 * Self.mib
        let start = try h.regions.map { try Self.currentLSN(h, $0) }
        // Rounds: us-east-1's application writes messages (the others only receive them: every
        // change in their streams is the applier's echo); ap-southeast-1's also churns another
        // table; every server switches WAL segment (the WAL end jumps up to 16 MiB each time).
        let rounds = 5
        for round in 0..<rounds {
            for n in 0..<40 {
                try CaptureTests.insert(writer, id: CaptureTests.id(0, round * 100 + n), session: "s-\(n % 5)", content: "round \(round) #\(n)",
                                        region: "us-east-1")
            }
            try other.execute("INSERT INTO unrelated SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g")
            for r in h.regions { _ = try h.dbs.query(r, "SELECT pg_switch_wal()") }
            try CaptureTests.waitIdentical(h, count: (round + 1) * 40)
            try CaptureTests.waitSlotsCaughtUp(h, prefix: prefix)
            try Self.checkpoint(h)
            for r in h.regions {
                let slot = Self.slot(prefix, r)
                try waitUntil("the slot of \(r) to hold less than \(bound) bytes of WAL after round \(round)", timeout: .seconds(30)) {
                    try Self.checkpoint(h)
                    return try (0..<bound).contains(Self.retained(h, r, slot))
                }
            }
        }
        // Meaningful: each server's WAL moved several times the bound meanwhile.
        for (i, r) in h.regions.enumerated() {
            let moved = try h.dbs.query(r, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text", [start[i]])[0][0].flatMap { Int64($0) } ?? 0
            #expect(moved > 3 * bound, "\(r): the WAL moved only \(moved) bytes during the test")
            print("retained WAL bounded: \(r) wrote \(moved / Self.mib) MiB of WAL, its slot holds \(try Self.retained(h, r, Self.slot(prefix, r))) bytes")
        }
        // The metric agrees: bounded, the slot reserved and streamed, events counted.
        for r in h.regions {
            try waitUntil("the retained-WAL metric of \(r) to be read and below \(bound)", timeout: .seconds(30)) {
                let m = try e.metrics()
                let key = "{region=\"\(r)\"}"
                guard let retained = m["region_replicator_capture_slot_retained_wal_bytes" + key],
                      m["region_replicator_capture_slot_wal_status" + key] == 1 else { return false }
                return retained < Double(bound) && m["region_replicator_capture_up" + key] == 1
                    && m["region_replicator_capture_slot_active" + key] == 1
            }
        }
        let m = try e.metrics()
        // The capture series pass promtool's linter too (HELP, TYPE, names).
        let file = h.dir + "/capture-metrics.txt"
        try e.get("/metrics").body.write(to: URL(fileURLWithPath: file))
        let check = try PrometheusTools.promtool(["check", "metrics"], stdinFile: file)
        #expect(check.status == 0 && check.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "\(check.output)")
        #expect(m["region_replicator_capture_events_total{region=\"us-east-1\",outcome=\"published\"}"] == Double(rounds * 40))
        #expect(m["region_replicator_capture_events_total{region=\"us-east-1\",outcome=\"captured\"}"] == Double(rounds * 40))
        #expect(m["region_replicator_capture_events_total{region=\"eu-west-1\",outcome=\"captured\"}"] == 0)
        #expect((m["region_replicator_capture_echo_transactions_total{region=\"eu-west-1\"}"] ?? 0) > 0)
        #expect(m["region_replicator_capture_lag_seconds_count{region=\"us-east-1\"}"] == Double(rounds * 40))
        // `/lag` carries the capture side of every capturing region.
        let lag = try e.lag()
        for r in h.regions {
            let c = try #require(lag[r]?["capture"] as? [String: Any], "\(r): \(lag[r] ?? [:])")
            #expect(c["streaming"] as? Bool == true && c["wal_status"] as? String == "reserved" && c["slot"] as? String == Self.slot(prefix, r))
            #expect(c.int("retained_wal_bytes").map { $0 < bound } == true, "\(c)")
            #expect((c["confirmed_lsn"] as? String).flatMap { LSN(text: $0) } != nil, "\(c)")
        }
        let east = try #require(lag["us-east-1"]?["capture"] as? [String: Any])
        #expect(east.int("events_published") == Int64(rounds * 40) && east["last_acknowledged_commit"] as? String != nil, "\(east)")
        let status = try runReplicator(["status", "--config", h.configPath])
        #expect(status.status == 0 && status.output.contains("CAPTURE") && status.output.contains("reserved"), "\(status.output)")
    }

    @Test("Kafka away while the application writes: the slot and the metric retain the WAL; once it is back every row arrives and the metric falls")
    func kafkaAwayRetainsThenReleases() throws {
        let (h, e, prefix) = try Self.harness(regions: ["us-east-1", "eu-west-1"], standaloneBroker: true)
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        let writer = try h.dbs.connect("us-east-1")
        defer { writer.close() }
        let slot = Self.slot(prefix, "us-east-1")
        for n in 0..<10 {
            try CaptureTests.insert(writer, id: CaptureTests.id(0, n), session: "s", content: "before \(n)", region: "us-east-1")
        }
        try CaptureTests.waitIdentical(h, count: 10)
        try CaptureTests.waitSlotsCaughtUp(h, prefix: prefix)
        try h.cluster.process!.setBrokers(up: false)
        let downAt = try Self.currentLSN(h, "us-east-1")
        // The application keeps writing while Kafka is away (with a WAL switch, so that what
        // the slot must hold is unmistakable).
        for n in 10..<310 {
            try CaptureTests.insert(writer, id: CaptureTests.id(0, n), session: "s-\(n % 9)", content: "while away \(n)", region: "us-east-1")
            if n == 150 { _ = try h.dbs.query("us-east-1", "SELECT pg_switch_wal()") }
        }
        let written = try h.dbs.query("us-east-1", "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::bigint::text", [downAt])[0][0].flatMap { Int64($0) } ?? 0
        var peak = 0.0
        try waitUntil("the retained-WAL metric to hold at least the \(written) bytes written while Kafka is away", timeout: .seconds(30)) {
            try Self.checkpoint(h)
            peak = try Self.metric(e, "region_replicator_capture_slot_retained_wal_bytes", "us-east-1") ?? 0
            // 90 %: the slot may have confirmed a keepalive's WAL end (other databases of the
            // shared server) just after `downAt` was read, before the first write.
            return peak >= Double(written) * 0.9
        }
        #expect(try Double(Self.retained(h, "us-east-1", slot)) >= Double(written) * 0.9)
        try h.cluster.process!.setBrokers(up: true)
        try CaptureTests.waitIdentical(h, count: 310, timeout: .seconds(90))
        try CaptureTests.waitSlotsCaughtUp(h, prefix: prefix)
        try waitUntil("the retained-WAL metric to fall well below its peak \(peak)", timeout: .seconds(60)) {
            try Self.checkpoint(h)
            let now = try Self.metric(e, "region_replicator_capture_slot_retained_wal_bytes", "us-east-1") ?? .infinity
            return now < min(peak / 4, Double(4 * Self.mib))
        }
        let published = try Self.metric(e, "region_replicator_capture_events_total", "us-east-1", ",outcome=\"published\"") ?? 0
        #expect(published >= 310, "published: \(published)")
        print("Kafka away: \(written) bytes written while away, metric peak \(Int(peak)), after: \(try Self.retained(h, "us-east-1", slot)) bytes")
    }

    @Test("an acknowledgement is served as it arrives: isolated single-row commits reach Kafka's ack in well under the 100 ms replication wait")
    func acknowledgementServedAtOnce() throws {
        let (h, e, prefix) = try Self.harness(regions: ["us-east-1", "eu-west-1"])
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        try h.startDaemon()
        let writer = try h.dbs.connect("us-east-1")
        defer { writer.close() }
        try CaptureTests.insert(writer, id: CaptureTests.id(0, 0), session: "s", content: "warm-up", region: "us-east-1")
        try CaptureTests.waitIdentical(h, count: 1)
        func lag() throws -> (sum: Double, count: Double) {
            let m = try e.metrics()
            return (m["region_replicator_capture_lag_seconds_sum{region=\"us-east-1\"}"] ?? 0,
                    m["region_replicator_capture_lag_seconds_count{region=\"us-east-1\"}"] ?? 0)
        }
        let before = try lag()
        // One commit at a time, the next only once the previous one is acknowledged: after each the
        // replication stream is quiet, so only the delivery report can end capture's wait.
        let n = 15
        for k in 1...n {
            try CaptureTests.insert(writer, id: CaptureTests.id(0, k), session: "s", content: "isolated \(k)", region: "us-east-1")
            try waitUntil("the acknowledgement of write \(k)", timeout: .seconds(20), interval: .milliseconds(5)) {
                try lag().count >= before.count + Double(k)
            }
        }
        let after = try lag()
        let mean = (after.sum - before.sum) / (after.count - before.count)
        print("capture lag of \(n) isolated commits: mean \(Int(mean * 1000)) ms")
        #expect(mean < 0.07, "mean commit → acknowledgement of isolated commits: \(Int(mean * 1000)) ms")
    }

    @Test("a lost slot: said loudly (log line naming the runbook, /lag, metric), the other regions keep applying; the runbook (a new slot by migrate, verify --repair) makes the regions identical again")
    func lostSlotRunbook() throws {
        let (h, e, prefix) = try Self.harness(regions: ["us-east-1", "eu-west-1"], standaloneBroker: true)
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        let server = h.dbs.server("us-east-1")
        func admin(_ sql: String) throws {
            let c = try PostgresConnection(conninfo: server.conninfo(database: "postgres"))
            defer { c.close() }
            _ = try c.query(sql)
        }
        // The servers are shared by every suite: the setting is restored whatever happens.
        defer {
            try? admin("ALTER SYSTEM RESET max_slot_wal_keep_size")
            try? admin("SELECT pg_reload_conf()")
        }
        let daemon = try h.startDaemon()
        let east = try h.dbs.connect("us-east-1")
        defer { east.close() }
        let slot = Self.slot(prefix, "us-east-1")
        func write(_ range: Range<Int>, _ what: String) throws {
            for n in range { try CaptureTests.insert(east, id: CaptureTests.id(0, n), session: "s-\(n % 3)", content: "\(what) \(n)", region: "us-east-1") }
        }
        try write(0..<5, "before")
        try CaptureTests.waitIdentical(h, count: 5)
        try CaptureTests.waitSlotsCaughtUp(h, prefix: prefix)

        // Kafka away: capture confirms nothing more; the server may keep no WAL for slots.
        try h.cluster.process!.setBrokers(up: false)
        try admin("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        try admin("SELECT pg_reload_conf()")
        try write(5..<15, "while away")
        try east.execute("CREATE TABLE pad (x int)")
        try waitUntil("the slot of us-east-1 to be invalidated (wal_status = lost)", timeout: .seconds(60)) {
            try east.execute("INSERT INTO pad VALUES (1)")
            _ = try h.dbs.query("us-east-1", "SELECT pg_switch_wal()")
            _ = try h.dbs.query("us-east-1", "CHECKPOINT")
            return try h.dbs.query("us-east-1", "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1", [slot]) == [["lost"]]
        }
        try admin("ALTER SYSTEM RESET max_slot_wal_keep_size")
        try admin("SELECT pg_reload_conf()")
        // Said loudly: the error line naming the runbook, `/lag`, the slot-state metric.
        try waitUntil("the daemon to report the lost slot (log, metric, /lag)", timeout: .seconds(60)) {
            guard daemon.log.contains("capture slot invalidated (wal_status = lost)"),
                  try Self.metric(e, "region_replicator_capture_slot_wal_status", "us-east-1") == 4 else { return false }
            let c = try e.lag()["us-east-1"]?["capture"] as? [String: Any]
            return c?["wal_status"] as? String == "lost" && c?["streaming"] as? Bool == false
        }
        let line = try #require(daemon.log.split(separator: "\n").first { $0.contains("capture slot invalidated") })
        #expect(line.contains(" error ") && line.contains("\"A capture slot is lost\" in docs/operations.md") && line.contains("slot=\(slot)"), "\(line)")
        let capture = try #require(try e.lag()["us-east-1"]?["capture"] as? [String: Any])
        #expect((capture["problem"] as? String)?.contains("invalidated") == true, "\(capture)")
        #expect(try Self.metric(e, "region_replicator_capture_up", "us-east-1") == 0)
        // Written while no slot captures them: never published.
        try write(15..<20, "unpublished")

        // The other regions keep applying: Kafka back, eu-west-1's write reaches us-east-1.
        try h.cluster.process!.setBrokers(up: true)
        _ = try h.dbs.query("eu-west-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 'w', 'user', 'from the west', 'eu-west-1', now())",
                            [CaptureTests.id(1, 1)])
        try waitUntil("us-east-1 to apply eu-west-1's write with its slot lost", timeout: .seconds(60)) {
            try h.dbs.query("us-east-1", "SELECT count(*) FROM messages WHERE message_id = $1::uuid", [CaptureTests.id(1, 1)]) == [["1"]]
        }
        let missing = try h.dbs.query("eu-west-1", "SELECT count(*) FROM messages WHERE content LIKE 'unpublished %'")
        #expect(missing == [["0"]], "eu-west-1 got rows written while us-east-1 had no slot: \(missing)")

        // The runbook: drop the lost slot, `migrate --region` creates a new one, the daemon picks it
        // up at its next retry; `verify --repair` copies the gap.
        let streamed = daemon.log.components(separatedBy: "capture streaming the slot").count
        _ = try h.dbs.query("us-east-1", "SELECT pg_drop_replication_slot($1)", [slot])
        let migrate = try runReplicator(["migrate", "--config", h.configPath, "--region", "us-east-1"])
        #expect(migrate.status == 0, "\(migrate.output)")
        try waitUntil("capture to stream the new slot of us-east-1", timeout: .seconds(75)) {
            let capture = try e.lag()["us-east-1"]?["capture"] as? [String: Any]
            return daemon.log.components(separatedBy: "capture streaming the slot").count > streamed
                && capture?["streaming"] as? Bool == true
        }
        let repair = try runReplicator(["verify", "--config", h.configPath, "--repair"], timeout: .seconds(180))
        #expect(repair.status == 0, "\(repair.output)")
        try write(20..<22, "after the new slot")
        try CaptureTests.waitIdentical(h, count: 23)
        #expect(try Self.metric(e, "region_replicator_capture_slot_wal_status", "us-east-1") != 4)
    }

    /// The regions whose slot the instance behind `e` streams now (`/lag` `capture.streaming`).
    static func streaming(_ e: DaemonEndpoint) throws -> Set<String> {
        Set(try e.lag().compactMap { region, doc in (doc["capture"] as? [String: Any])?["streaming"] as? Bool == true ? region : nil })
    }

    @Test("two instances: one streams each region's slot, the other stands by quietly; SIGKILL the streaming one and the other takes over")
    func standbyTakesOver() throws {
        let (h, a, prefix) = try Self.harness(regions: ["us-east-1", "eu-west-1"])
        defer { CaptureTests.dropSlots(h, prefix: prefix) }
        let first = try h.startDaemon()
        try waitUntil("the first instance to stream every region's slot") { try Self.streaming(a) == Set(h.regions) }
        let portB = try HTTPProbe.freePort()
        let second = try h.startInstance(httpPort: portB)
        let b = DaemonEndpoint(port: portB)
        try waitUntil("the second instance to stand by for every region") {
            let lag = try b.lag()
            return h.regions.allSatisfy { r in
                ((lag[r]?["capture"] as? [String: Any])?["problem"] as? String)?.contains("is active for PID") == true
            }
        }
        for r in h.regions { #expect(try Self.metric(b, "region_replicator_capture_up", r) == 0) }
        // Let it retry a few times (a retry every 0.5–2 s), observed on the server: the second's
        // replication connections come and go while the first's walsender stays.
        let firstPIDs = try h.regions.map { r in
            try h.dbs.query(r, "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = $1", [Self.slot(prefix, r)])[0][0]
        }
        first.kill9()
        let killed = ContinuousClock.now
        try waitUntil("the second instance to take over every region's slot", timeout: .seconds(60), interval: .milliseconds(50)) {
            try Self.streaming(b) == Set(h.regions)
        }
        let takeover = ContinuousClock.now - killed
        for (i, r) in h.regions.enumerated() {
            let now = try h.dbs.query(r, "SELECT active_pid::text FROM pg_replication_slots WHERE slot_name = $1", [Self.slot(prefix, r)])[0][0]
            #expect(now != nil && now != firstPIDs[i], "\(r): the slot's walsender did not change")
            #expect(try Self.metric(b, "region_replicator_capture_up", r) == 1)
        }
        // The survivor publishes: a write in eu-west-1 reaches us-east-1.
        _ = try h.dbs.query("eu-west-1", "INSERT INTO messages (message_id, session_id, role, content, region, created_at) VALUES ($1::uuid, 's', 'user', 'after the takeover', 'eu-west-1', now())",
                            [CaptureTests.id(1, 1)])
        try waitUntil("us-east-1 to receive eu-west-1's write after the takeover", timeout: .seconds(60)) {
            try h.dbs.query("us-east-1", "SELECT content FROM messages") == [["after the takeover"]]
        }
        // Quiet: one info line per region while standing by, no warning or error from capture.
        let lines = second.log.split(separator: "\n")
        let standby = lines.filter { $0.contains("capture standing by") }
        #expect(standby.count == h.regions.count, "\(standby)")
        let loud = lines.filter { $0.contains("loop=capture") && ($0.contains(" warning ") || $0.contains(" error ")) }
        #expect(loud.isEmpty, "\(loud.prefix(5))")
        #expect(takeover < .seconds(15), "takeover took \(takeover)")
        print("capture takeover after SIGKILL of the streaming instance: \(takeover)")
    }
}
