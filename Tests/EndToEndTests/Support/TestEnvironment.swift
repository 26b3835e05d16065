import Foundation
import PostgresClient
import Testing

/// What scripts/test set up: Postgres servers on loopback and the built binaries.
enum TestEnvironment {
    struct Server: Sendable {
        let index: Int
        let port: Int
        let dataDir: String

        func conninfo(database: String) -> String {
            "host=127.0.0.1 port=\(port) dbname=\(database) user=postgres"
        }

        /// Stops the server at once (`pg_ctl stop -m immediate`): a crash, as far as clients can tell.
        func stopImmediately() throws {
            try TestEnvironment.pgctl(["-D", dataDir, "-m", "immediate", "-w", "stop"])
        }

        func start() throws {
            try TestEnvironment.pgctl(["-D", dataDir, "-l", dataDir + "/server.log", "-w", "-t", "60", "start"])
        }

        /// The postmaster and all its children (backends, background workers), e.g. to
        /// SIGSTOP the whole server as a hung host would look. Empty when it is not running.
        func processes() -> [pid_t] {
            guard let pidFile = try? String(contentsOfFile: dataDir + "/postmaster.pid", encoding: .utf8),
                  let master = pid_t(pidFile.split(separator: "\n").first ?? "") else { return [] }
            let children = (try? TestEnvironment.run("/usr/bin/pgrep", ["-P", String(master)])) ?? ""
            return [master] + children.split(separator: "\n").compactMap { pid_t($0) }
        }

        var isRunning: Bool {
            (try? TestEnvironment.run("/usr/sbin/runuser", ["-u", "postgres", "--", TestEnvironment.pgBinDir + "/pg_ctl", "-D", dataDir, "status"])) != nil
        }
    }

    static let servers: [Server] = {
        let env = ProcessInfo.processInfo.environment
        let ports = (env["RR_TEST_PG_PORTS"] ?? "").split(separator: ",").compactMap { Int($0) }
        let dirs = (env["RR_TEST_PG_DATADIRS"] ?? "").split(separator: ",").map(String.init)
        return zip(ports, dirs).enumerated().map { Server(index: $0.offset, port: $0.element.0, dataDir: $0.element.1) }
    }()

    static let pgBinDir = ProcessInfo.processInfo.environment["RR_TEST_PG_BINDIR"] ?? "/usr/lib/postgresql/15/bin"

    /// The folder holding `region-replicator` (from `swift build --show-bin-path`).
    static let binDir: String = {
        if let d = ProcessInfo.processInfo.environment["RR_BIN_DIR"] { return d }
        return FileManager.default.currentDirectoryPath + "/.build/debug"
    }()

    static var replicatorBinary: String { binDir + "/region-replicator" }

    /// Fails the test when the binary is not built.
    static func requireBinary() throws {
        guard FileManager.default.isExecutableFile(atPath: replicatorBinary) else {
            throw TestSetupError("no region-replicator binary at \(replicatorBinary): run `swift build` or `bash scripts/test`")
        }
    }

    /// Fails the test with a clear message when scripts/test did not set things up.
    static func require() throws {
        guard servers.count >= 3 else {
            throw TestSetupError("these tests need three Postgres servers: run them with `bash scripts/test` (RR_TEST_PG_PORTS is not set)")
        }
        guard FileManager.default.isExecutableFile(atPath: replicatorBinary) else {
            throw TestSetupError("no region-replicator binary at \(replicatorBinary): run `swift build` or `bash scripts/test`")
        }
    }

    static func pgctl(_ args: [String]) throws {
        try run("/usr/sbin/runuser", ["-u", "postgres", "--", pgBinDir + "/pg_ctl"] + args)
    }

    /// Runs a command to completion; throws with its output when it fails.
    @discardableResult
    static func run(_ path: String, _ args: [String], timeout: Duration = .seconds(120)) throws -> String {
        // Output goes to a file, not a pipe: `pg_ctl start` leaves the postmaster holding
        // its stdout, so a pipe would never reach end-of-file.
        let outPath = NSTemporaryDirectory() + "rr-cmd-\(UUID().uuidString).out"
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let child = try ChildProcess(path, args, outputPath: outPath)
        let status = try child.wait(timeout: timeout)
        let out = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        guard status == 0 else {
            throw TestSetupError("\(path) \(args.joined(separator: " ")) exited \(status): \(out)")
        }
        return out
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Polls `condition` until it holds or `timeout` passes; the failure names what was awaited.
func waitUntil(_ what: String, timeout: Duration = .seconds(60), interval: Duration = .milliseconds(100),
               _ condition: () throws -> Bool) throws {
    let deadline = ContinuousClock.now.advanced(by: timeout)
    var lastError: (any Error)? = nil
    while ContinuousClock.now < deadline {
        do {
            if try condition() { return }
            lastError = nil
        } catch {
            lastError = error
        }
        Thread.sleep(forTimeInterval: Double(interval.components.attoseconds) / 1e18 + Double(interval.components.seconds))
    }
    throw TestSetupError("timed out after \(timeout) waiting for: \(what)" + (lastError.map { " (last error: \($0))" } ?? ""))
}

/// One database per region for one test, on the shared servers; dropped at the end.
final class RegionDatabases: @unchecked Sendable {
    let names: [String]  // region names
    let database: String
    let servers: [TestEnvironment.Server]

    init(regions: [String] = ["us-east-1", "eu-west-1", "ap-southeast-1"]) throws {
        try TestEnvironment.require()
        names = regions
        database = "rr_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        servers = regions.indices.map { TestEnvironment.servers[$0 % TestEnvironment.servers.count] }
        for s in Set(servers.map(\.index)) {
            let admin = try PostgresConnection(conninfo: TestEnvironment.servers[s].conninfo(database: "postgres"))
            try admin.execute("CREATE DATABASE \(database)")
        }
    }

    func conninfo(_ region: String) -> String {
        servers[names.firstIndex(of: region)!].conninfo(database: database)
    }

    func server(_ region: String) -> TestEnvironment.Server { servers[names.firstIndex(of: region)!] }

    func connect(_ region: String) throws -> PostgresConnection {
        try PostgresConnection(conninfo: conninfo(region), connectTimeoutSeconds: 3, queryTimeout: .seconds(30))
    }

    func query(_ region: String, _ sql: String, _ params: [String?] = []) throws -> [[String?]] {
        let c = try connect(region)
        defer { c.close() }
        return try c.query(sql, params).rows
    }

    func drop() {
        for s in Set(servers.map(\.index)) {
            let server = TestEnvironment.servers[s]
            if !server.isRunning { try? server.start() }
            guard let admin = try? PostgresConnection(conninfo: server.conninfo(database: "postgres")) else { continue }
            try? admin.execute("DROP DATABASE IF EXISTS \(database) WITH (FORCE)")
        }
    }
}
