import Foundation

/// A `region-replicator` child process with its output in a log file.
final class Daemon: @unchecked Sendable {
    let process = Process()
    let logPath: String

    /// Starts `region-replicator <arguments>`.
    init(_ arguments: [String], logPath: String, environment: [String: String] = [:]) throws {
        self.logPath = logPath
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        log.seekToEndOfFile()
        process.executableURL = URL(fileURLWithPath: TestEnvironment.replicatorBinary)
        process.arguments = arguments
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        try process.run()
    }

    var isRunning: Bool { process.isRunning }
    var pid: Int32 { process.processIdentifier }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    func signal(_ sig: Int32) { if process.isRunning { kill(process.processIdentifier, sig) } }

    /// Waits for the process to exit and returns its status.
    @discardableResult
    func wait(timeout: Duration = .seconds(30)) throws -> Int32 {
        try waitUntil("region-replicator (pid \(pid)) to exit", timeout: timeout, interval: .milliseconds(50)) { !process.isRunning }
        return process.terminationStatus
    }

    /// SIGKILL, then reap. Safe to call more than once.
    func kill9() {
        signal(SIGKILL)
        _ = try? wait(timeout: .seconds(10))
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL); process.waitUntilExit() } }
}

/// Runs `region-replicator <arguments>` to completion.
func runReplicator(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: TestEnvironment.replicatorBinary)
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, out)
}
