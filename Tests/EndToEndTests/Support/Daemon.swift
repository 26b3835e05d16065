import Foundation

/// A `region-replicator` child process with its output in a log file.
final class Daemon: @unchecked Sendable {
    let child: ChildProcess
    let logPath: String

    /// Starts `region-replicator <arguments>` (`binary`: another build of it, e.g. an older release).
    init(_ arguments: [String], logPath: String, environment: [String: String] = [:],
         binary: String = TestEnvironment.replicatorBinary) throws {
        self.logPath = logPath
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        child = try ChildProcess(binary, arguments, outputPath: logPath, environment: env)
    }

    var isRunning: Bool { child.isRunning }
    var pid: Int32 { child.pid }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { child.signal(sig) }

    /// Waits for the process to exit and returns its status (128+signal when killed).
    @discardableResult
    func wait(timeout: Duration = .seconds(30)) throws -> Int32 {
        try child.wait(timeout: timeout)
    }

    /// SIGKILL, then reap. Safe to call more than once.
    func kill9() {
        signal(SIGKILL)
        _ = try? wait(timeout: .seconds(10))
    }

    deinit { kill9() }
}

/// Runs `region-replicator <arguments>` to completion and returns its status and output.
func runReplicator(_ arguments: [String], environment: [String: String] = [:],
                   timeout: Duration = .seconds(120)) throws -> (status: Int32, output: String) {
    let outPath = NSTemporaryDirectory() + "rr-run-\(UUID().uuidString).out"
    defer { try? FileManager.default.removeItem(atPath: outPath) }
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    let child = try ChildProcess(TestEnvironment.replicatorBinary, arguments, outputPath: outPath, environment: env)
    let status = try child.wait(timeout: timeout)
    return (status, (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "")
}
