import Foundation
import Testing

/// The daemon as systemd runs it (docs/systemd.md): the unit file, scripts/install, the notify
/// protocol over a socket the test owns (`NOTIFY_SOCKET`), signals, and journald logging.
/// Serialized: one test stops a shared Postgres server.
@Suite("systemd service", .serialized)
struct SystemdTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    // MARK: - Helpers

    /// A harness whose daemons serve HTTP on a free loopback port (suites run in parallel).
    func harness(maxBatchEvents: Int = 500) throws -> Harness {
        try Harness(maxBatchEvents: maxBatchEvents, extraConfig: "http:\n  listen: \"127.0.0.1:\(try HTTPProbe.freePort())\"\n")
    }

    /// Runs a command to completion: (exit status, stdout and stderr).
    func run(_ path: String, _ arguments: [String], environment: [String: String] = [:],
             timeout: Duration = .seconds(120)) throws -> (status: Int32, output: String) {
        let outPath = NSTemporaryDirectory() + "rr-systemd-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        let child = try ChildProcess(path, arguments, outputPath: outPath, environment: env)
        let status = try child.wait(timeout: timeout)
        return (status, (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "")
    }

    func startDaemon(_ h: Harness, environment: [String: String], logPath: String? = nil) throws -> Daemon {
        let d = try Daemon(["run", "--config", h.configPath], logPath: logPath ?? h.dir + "/daemon-\(h.daemons.count).log",
                           environment: environment)
        h.daemons.append(d)
        return d
    }

    func logLines(_ d: Daemon) -> [Substring] { d.log.split(separator: "\n") }

    func waitConnected(_ d: Daemon, _ regions: [String]) throws {
        for r in regions {
            try waitUntil("region \(r) to log that its pipeline connected") {
                logLines(d).contains { $0.contains("connected to the region's database") && $0.contains("region=\(r)") }
            }
        }
    }

    /// Each region's rows equal the model over exactly the records below its stored offsets:
    /// no batch half-applied, none applied without its offset, no offset without its rows.
    func expectAppliedPrefixes(_ h: Harness, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let records = try AppliedPrefixModel.readTopic(h.cluster)
        for r in h.regions {
            let stored = try h.storedOffsets(r)
            let expected = AppliedPrefixModel.expectedRows(records, below: stored, in: r)
            let actual = try h.rows(r)
            let missing = Set(expected).subtracting(actual)
            let extra = Set(actual).subtracting(expected)
            #expect(missing.isEmpty && extra.isEmpty && actual.count == expected.count,
                    "region \(r) at offsets \(stored.sorted { $0.key < $1.key }): \(missing.count) rows missing (e.g. \(missing.sorted().prefix(2))), \(extra.count) extra (e.g. \(extra.sorted().prefix(2)))",
                    sourceLocation: sourceLocation)
        }
    }

    // MARK: - Unit file and installer

    @Test("scripts/install stages binary, unit and example config; the unit verifies and rates ≤ 1.5 exposure; --uninstall keeps the configuration")
    func installedUnitVerifiesAndIsHardened() throws {
        guard FileManager.default.isExecutableFile(atPath: TestEnvironment.replicatorBinary) else {
            throw TestSetupError("no region-replicator binary at \(TestEnvironment.replicatorBinary): run `swift build`")
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") else {
            throw TestSetupError("systemd-analyze is missing: apt-get install systemd")
        }
        let root = NSTemporaryDirectory() + "rr-install-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let install = Self.packageRoot + "/scripts/install"
        let env = ["DESTDIR": root, "BINARY": TestEnvironment.replicatorBinary]

        let installed = try run("/bin/bash", [install], environment: env)
        #expect(installed.status == 0, "\(installed.output)")
        func mode(_ path: String) -> Int? {
            (try? FileManager.default.attributesOfItem(atPath: root + path)[.posixPermissions] as? Int)
        }
        let unitPath = "/etc/systemd/system/region-replicator.service"
        #expect(mode("/usr/local/bin/region-replicator") == 0o755)
        #expect(mode(unitPath) == 0o644)
        #expect(mode("/etc/region-replicator/config.yaml") == 0o640, "the configuration is not world-readable")
        #expect(mode("/etc/region-replicator/credentials") == 0o700)
        #expect(mode("/etc/sysusers.d/region-replicator.conf") == 0o644)

        // The directives docs/systemd.md and the operators rely on.
        let unit = try String(contentsOfFile: root + unitPath, encoding: .utf8)
        var settings: [String: [String]] = [:]
        for line in unit.split(separator: "\n") where !line.hasPrefix("#") && !line.hasPrefix("[") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            settings[String(line[..<eq]), default: []].append(String(line[line.index(after: eq)...]))
        }
        for (key, value) in [("Type", "notify"), ("NotifyAccess", "main"), ("WatchdogSec", "30"), ("Restart", "on-failure"),
                             ("RestartSec", "2"), ("RestartPreventExitStatus", "78"), ("TimeoutStopSec", "45"),
                             ("DynamicUser", "yes"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                             ("PrivateTmp", "yes"), ("CapabilityBoundingSet", ""), ("MemoryDenyWriteExecute", "yes"),
                             ("LoadCredential", "region-replicator:/etc/region-replicator/credentials"),
                             ("ExecReload", "/bin/kill -HUP $MAINPID")] {
            #expect(settings[key] == [value], "\(key)=\(value) (found \(settings[key] ?? []))")
        }

        // ExecStart names the installed binary.
        let execStart = try #require(settings["ExecStart"]?.first)
        let binary = String(try #require(execStart.split(separator: " ").first))
        #expect(binary == "/usr/local/bin/region-replicator")
        #expect(execStart.hasSuffix(" run --config /etc/region-replicator/config.yaml"))
        #expect(FileManager.default.isExecutableFile(atPath: root + binary), "ExecStart's binary is installed")

        // `systemd-analyze verify` checks the ExecStart binary on the live file system: verify a
        // copy whose ExecStart names the staged binary.
        let verifyDir = root + "/verify"
        try FileManager.default.createDirectory(atPath: verifyDir, withIntermediateDirectories: true)
        let copy = verifyDir + "/region-replicator.service"
        try unit.replacingOccurrences(of: "ExecStart=" + binary + " ", with: "ExecStart=" + root + binary + " ")
            .write(toFile: copy, atomically: true, encoding: .utf8)
        let verify = try run("/usr/bin/systemd-analyze", ["verify", copy])
        #expect(verify.status == 0 && !verify.output.contains("region-replicator.service"), "systemd-analyze verify: \(verify.output)")

        let security = try run("/usr/bin/systemd-analyze", ["security", "--offline=yes", "--no-pager", copy])
        let overall = try #require(security.output.firstMatch(of: #/Overall exposure level for region-replicator\.service: ([0-9.]+)/#),
                                   "no overall exposure line in: \(security.output)")
        let exposure = try #require(Double(overall.1))
        #expect(exposure <= 1.5, "exposure \(exposure): \(security.output.split(separator: "\n").filter { $0.contains("✗") }.joined(separator: "\n"))")

        // The example configuration is valid as installed: with the credentials systemd would
        // pass, check-config gets past the configuration (69: nothing to connect to here),
        // and without them it names the missing credential (78).
        let credentials = root + "/credentials"
        try FileManager.default.createDirectory(atPath: credentials, withIntermediateDirectories: true)
        for region in ["us-east-1", "eu-west-1"] {
            try "host=127.0.0.1 port=1 dbname=app user=replicator password=hunter2\n"
                .write(toFile: credentials + "/region-replicator_" + region, atomically: true, encoding: .utf8)
        }
        let config = root + "/etc/region-replicator/config.yaml"
        let check = try run(TestEnvironment.replicatorBinary, ["check-config", "--config", config, "--timeout", "1"],
                            environment: ["CREDENTIALS_DIRECTORY": credentials])
        #expect(check.status == 69, "check-config of the example config: \(check.output)")
        #expect(!check.output.contains("hunter2"))
        let noCredentials = try run(TestEnvironment.replicatorBinary, ["check-config", "--config", config, "--timeout", "1"],
                                    environment: ["CREDENTIALS_DIRECTORY": root + "/nowhere"])
        #expect(noCredentials.status == 78 && noCredentials.output.contains("region-replicator_us-east-1"), "\(noCredentials.output)")

        // Installing again never overwrites an operator's configuration.
        try "# mine\n".write(toFile: config, atomically: false, encoding: .utf8)
        let again = try run("/bin/bash", [install], environment: env)
        #expect(again.status == 0 && again.output.contains("kept the existing"), "\(again.output)")
        #expect(try String(contentsOfFile: config, encoding: .utf8) == "# mine\n")

        let uninstalled = try run("/bin/bash", [install, "--uninstall"], environment: ["DESTDIR": root])
        #expect(uninstalled.status == 0, "\(uninstalled.output)")
        #expect(!FileManager.default.fileExists(atPath: root + "/usr/local/bin/region-replicator"))
        #expect(!FileManager.default.fileExists(atPath: root + unitPath))
        #expect(FileManager.default.fileExists(atPath: config) && FileManager.default.fileExists(atPath: root + "/etc/region-replicator/credentials"))
        #expect(uninstalled.output.contains("kept \(root)/etc/region-replicator"), "\(uninstalled.output)")
    }

    @Test("A bad configuration exits 78, the status RestartPreventExitStatus= names, without READY=1")
    func badConfigurationExits78() throws {
        let dir = NSTemporaryDirectory() + "rr-badconfig-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "regions:\n  - name: us-east-1\n    dsn: \"host=x\"\n    colour: blue\n".write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let socket = try NotifySocket()
        let result = try run(TestEnvironment.replicatorBinary, ["run", "--config", dir + "/config.yaml"],
                             environment: ["NOTIFY_SOCKET": socket.path], timeout: .seconds(30))
        #expect(result.status == 78, "\(result.output)")
        #expect(socket.messages(with: "READY=1").isEmpty)
    }

    // MARK: - Notify protocol

    @Test("READY=1 only once every region is reachable; WATCHDOG=1 at least every WATCHDOG_USEC/2 throughout; STATUS= lines; SIGTERM → STOPPING=1, exit 0")
    func readyWaitsForEveryRegion() throws {
        let h = try harness()
        let late = "ap-southeast-1"
        let server = h.dbs.server(late)
        try server.stopImmediately()
        defer { if !server.isRunning { try? server.start() } }

        let socket = try NotifySocket()
        let d = try startDaemon(h, environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "2000000"])
        try waitConnected(d, h.regions.filter { $0 != late })
        // The other regions are up; give the daemon ample time to (wrongly) declare itself ready.
        let onlyTwo = ContinuousClock.now
        Thread.sleep(forTimeInterval: 3)
        #expect(d.isRunning)
        #expect(socket.messages(with: "READY=1").isEmpty, "READY=1 while \(late)'s database is down")
        let starting = try #require(socket.messages(with: "STATUS=").last?.text)
        #expect(starting.hasPrefix("STATUS=starting") && starting.contains("\(late) DOWN") && starting.contains("us-east-1 up"), "\(starting)")
        #expect(socket.messages(with: "WATCHDOG=1").filter { $0.at >= onlyTwo }.count >= 2,
                "the daemon is healthy while a region is down: the watchdog keeps being pinged")

        let restarted = ContinuousClock.now
        try server.start()
        let ready = try socket.wait(for: "READY=1", timeout: .seconds(60))
        #expect(ready.at >= restarted)
        #expect(ready.text.hasPrefix("READY=1\nSTATUS=ready;") && h.regions.allSatisfy { ready.text.contains("\($0) up") }, "\(ready.text)")

        // Events flow; the STATUS= line follows the lag back to zero.
        var w = Workload(origins: h.regions, seed: 41)
        w.generate(sessions: 20, messages: 800)
        w.shuffle()
        try h.cluster.produce(w.events)
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        try waitUntil("a STATUS= line with every region caught up", timeout: .seconds(30)) {
            guard let last = socket.messages(with: "STATUS=").last?.text else { return false }
            return last.contains("STATUS=ready;") && h.regions.allSatisfy { last.contains("\($0) up lag 0 events") }
        }
        Thread.sleep(forTimeInterval: 2)

        let term = ContinuousClock.now
        d.signal(SIGTERM)
        let stopping = try socket.wait(for: "STOPPING=1", after: term, timeout: .seconds(10))
        #expect(stopping.text.contains("STATUS=stopping"))
        #expect(try d.wait(timeout: .seconds(45)) == 0, "\(d.log.suffix(2000))")
        #expect(socket.messages(with: "READY=1").count == 1)

        // systemd enforces WATCHDOG_USEC between pings: check every gap of the whole run, from
        // the first ping to the exit, including the outage and the drain.
        let pings = socket.messages(with: "WATCHDOG=1").map(\.at)
        #expect(pings.count >= 8, "\(pings.count) pings")
        let gaps = zip(pings.dropFirst(), pings).map { $0 - $1 } + [stopping.at - (pings.last ?? stopping.at)]
        let longest = gaps.max() ?? .zero
        #expect(longest <= .seconds(2), "longest gap between WATCHDOG=1 pings: \(longest) (WATCHDOG_USEC = 2 s)")
    }

    @Test("SIGTERM while batches are being applied: STOPPING=1, exit 0, every region holds exactly the records below its stored offsets; a restart completes it")
    func sigtermDrainIsAtomic() throws {
        let h = try harness(maxBatchEvents: 100)
        var w = Workload(origins: h.regions, seed: 42)
        w.generate(sessions: 40, messages: 4000)
        w.shuffle()
        let socket = try NotifySocket()
        let d = try startDaemon(h, environment: ["NOTIFY_SOCKET": socket.path])
        try socket.wait(for: "READY=1")

        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        try waitUntil("some region to commit a batch") { try h.regions.contains { try h.storedOffsets($0).values.reduce(0, +) > 0 } }
        let term = ContinuousClock.now
        d.signal(SIGTERM)
        try socket.wait(for: "STOPPING=1", after: term, timeout: .seconds(10))
        #expect(try d.wait(timeout: .seconds(45)) == 0, "\(d.log.suffix(2000))")
        #expect(d.log.contains("SIGTERM: draining"))
        try expectAppliedPrefixes(h)

        try h.cluster.produce(Array(w.events[half...]))
        let d2 = try startDaemon(h, environment: [:])
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        d2.signal(SIGTERM)
        #expect(try d2.wait(timeout: .seconds(45)) == 0, "\(d2.log.suffix(3000))")
    }

    @Test("A second SIGTERM during a drain that cannot finish exits at once with status 0; nothing is lost")
    func secondSignalExitsAtOnce() throws {
        let h = try harness(maxBatchEvents: 100)
        var w = Workload(origins: h.regions, seed: 43)
        w.generate(sessions: 30, messages: 1500)
        w.shuffle()
        let socket = try NotifySocket()
        let d = try startDaemon(h, environment: ["NOTIFY_SOCKET": socket.path])
        try socket.wait(for: "READY=1")
        let third = w.events.count / 3
        try h.cluster.produce(Array(w.events[..<third]))
        try h.waitAllCaughtUp()

        // eu-west-1's next transaction waits behind a lock this test holds, for as long as it holds it.
        let blocked = "eu-west-1"
        let locker = try h.dbs.connect(blocked)
        defer { locker.close() }
        try locker.execute("BEGIN; LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
        try h.cluster.produce(Array(w.events[third...]))
        try waitUntil("\(blocked)'s pipeline to wait for the lock") {
            try h.dbs.query(blocked, """
                SELECT count(*) FROM pg_stat_activity
                WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'
                """, ["region-replicator \(blocked)"])[0][0] != "0"
        }
        for r in h.regions where r != blocked { try h.waitCaughtUp(r) }

        let term = ContinuousClock.now
        d.signal(SIGTERM)
        try socket.wait(for: "STOPPING=1", after: term, timeout: .seconds(10))
        Thread.sleep(forTimeInterval: 2)
        #expect(d.isRunning, "the drain waits for \(blocked)'s blocked transaction")

        let second = ContinuousClock.now
        d.signal(SIGTERM)
        let status = try d.wait(timeout: .seconds(10))
        let took = ContinuousClock.now - second
        #expect(status == 0, "\(d.log.suffix(2000))")
        #expect(took < .seconds(3), "exit took \(took)")
        #expect(d.log.contains("second SIGTERM during the drain"))
        try locker.execute("ROLLBACK")

        // The interrupted transaction rolled back as a whole.
        try expectAppliedPrefixes(h)
        let high = try h.cluster.highWatermarks().values.reduce(0, +)
        #expect(try h.storedOffsets(blocked).values.reduce(0, +) < high, "\(blocked) cannot have committed behind the lock")

        let d2 = try startDaemon(h, environment: [:])
        try h.waitAllCaughtUp()
        try expectRegionsMatchModel(h, w)
        d2.signal(SIGTERM)
        #expect(try d2.wait(timeout: .seconds(45)) == 0, "\(d2.log.suffix(3000))")
    }

    // MARK: - Logging

    @Test("Under journald: <N> priority prefixes and no timestamps; SIGHUP applies log.level and keeps it on an invalid file; json lines parse")
    func journaldLoggingAndSighup() throws {
        let h = try harness()
        let logPath = h.dir + "/journal.log"
        #expect(FileManager.default.createFile(atPath: logPath, contents: nil))
        var st = stat()
        #expect(stat(logPath, &st) == 0)
        let d = try startDaemon(h, environment: ["JOURNAL_STREAM": "\(st.st_dev):\(st.st_ino)"], logPath: logPath)
        try waitConnected(d, h.regions)

        let lines = logLines(d)
        #expect(lines.allSatisfy { $0.prefixMatch(of: #/<[2-7]>(trace|debug|info|notice|warning|error|critical) /#) != nil },
                "every line starts with a priority and a level: \(lines.filter { $0.prefixMatch(of: #/<[2-7]>/#) == nil }.prefix(3))")
        #expect(!lines.contains { $0.prefixMatch(of: #/<\d>\d{4}-\d\d-\d\dT/#) != nil }, "journald stamps entries itself")
        #expect(lines.contains { $0.hasPrefix("<6>info ") })
        #expect(!lines.contains { $0.hasPrefix("<7>") }, "log.level info: no debug lines yet")

        let original = try String(contentsOfFile: h.configPath, encoding: .utf8)
        try original.replacingOccurrences(of: "  level: info\n", with: "  level: debug\n")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        try waitUntil("the log level notice") { d.log.contains("<5>notice log level changed to debug") }

        try "kafka: [\n".write(toFile: h.configPath, atomically: true, encoding: .utf8)
        d.signal(SIGHUP)
        try waitUntil("the reload error") { d.log.contains("<3>error SIGHUP: the configuration file is invalid; keeping log level debug") }
        #expect(d.isRunning)

        d.signal(SIGTERM)
        #expect(try d.wait(timeout: .seconds(45)) == 0)
        #expect(logLines(d).contains { $0.hasPrefix("<7>debug ") }, "debug lines after SIGHUP (the shutdown is logged at debug level)")

        // format: json, not under journald: every line is one JSON object.
        try original.replacingOccurrences(of: "  level: info\n", with: "  level: info\n  format: json\n")
            .write(toFile: h.configPath, atomically: true, encoding: .utf8)
        let j = try startDaemon(h, environment: [:])
        try waitUntil("json lines from every region") {
            h.regions.allSatisfy { r in logLines(j).contains { $0.contains("connected to the region's database") && $0.contains(r) } }
        }
        j.signal(SIGTERM)
        #expect(try j.wait(timeout: .seconds(45)) == 0)
        let jsonLines = logLines(j)
        #expect(!jsonLines.isEmpty)
        for line in jsonLines {
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["message"] is String && object?["priority"] is Int && object?["level"] is String, "not a log object: \(line)")
        }
    }
}
