import Foundation

/// A child process started with posix_spawn and reaped with waitpid.
///
/// Foundation's `Process` was seen to miss the exit of a child whose own child (a postmaster
/// started by `pg_ctl start`) lives on, hanging `waitUntilExit()`; plain waitpid cannot.
final class ChildProcess: @unchecked Sendable {
    let pid: pid_t
    private let lock = NSLock()
    private var status: Int32? = nil

    /// Starts `path` with `arguments`, stdin from /dev/null, stdout and stderr appended to `outputPath`.
    init(_ path: String, _ arguments: [String], outputPath: String, environment: [String: String]? = nil) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        // Children start with default signal dispositions and an empty mask (the test runner
        // and librdkafka block some signals in their threads).
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attr, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let env = (environment ?? ProcessInfo.processInfo.environment).map { "\($0.key)=\($0.value)" }
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup($0) } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, envp)
        guard rc == 0 else { throw TestSetupError("cannot start \(path): \(String(cString: strerror(rc)))") }
        self.pid = pid
    }

    /// The exit status (128+signal when killed), or nil while running. Reaps the child.
    var exitStatus: Int32? {
        lock.lock()
        defer { lock.unlock() }
        if let status { return status }
        var raw: Int32 = 0
        let r = waitpid(pid, &raw, WNOHANG)
        guard r == pid else { return nil }
        let s: Int32 = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        status = s
        return s
    }

    var isRunning: Bool { exitStatus == nil }

    func signal(_ sig: Int32) { if isRunning { kill(pid, sig) } }

    @discardableResult
    func wait(timeout: Duration) throws -> Int32 {
        try waitUntil("pid \(pid) to exit", timeout: timeout, interval: .milliseconds(20)) { exitStatus != nil }
        return exitStatus!
    }
}
