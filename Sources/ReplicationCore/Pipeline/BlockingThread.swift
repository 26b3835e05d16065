import Foundation

/// The one way this package runs blocking work (libpq, librdkafka, sockets, file I/O) from async
/// code: on a dedicated, named thread of its own, never on Swift's cooperative pool. The caller
/// suspends until the body returns and gets its result (or its error) back.
///
/// One thread per call, as each blocking owner needs: a region's pipeline keeps its thread for
/// its whole life; a command's single query gets a short-lived one.
public enum BlockingThread {
    /// Runs `body` on a new thread called `name` and returns what it returned or throws what it threw.
    public static func run<T: Sendable, E: Error>(
        name: String, _ body: @escaping @Sendable () throws(E) -> T
    ) async throws(E) -> T {
        let result: Result<T, E> = await withCheckedContinuation { cont in
            let thread = Thread {
                nameCurrentThread(name)
                cont.resume(returning: Result(catching: body))
            }
            thread.name = name
            thread.start()
        }
        return try result.get()
    }

    /// Names the calling thread for `top -H`, `perf` and `/proc/<pid>/task/*/comm`: Linux keeps
    /// at most 15 bytes and refuses a longer name outright (the thread then keeps its pool's), so
    /// `name` is cut to its first 15 bytes, on a character boundary.
    static func nameCurrentThread(_ name: String) {
        var short = ""
        for c in name {
            guard short.utf8.count + c.utf8.count <= maxNameBytes else { break }
            short.append(c)
        }
        // `/proc/thread-self/comm` is what pthread_setname_np writes (which Glibc declares only
        // for _GNU_SOURCE); a failure leaves the pool's name, nothing else.
        let fd = open("/proc/thread-self/comm", O_WRONLY)
        guard fd >= 0 else { return }
        defer { close(fd) }
        _ = Array(short.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    /// Linux's limit on a thread's name, in bytes (without the terminating NUL).
    static let maxNameBytes = 15
}
