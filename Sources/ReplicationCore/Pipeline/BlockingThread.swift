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
            let thread = Thread { cont.resume(returning: Result(catching: body)) }
            thread.name = name
            thread.start()
        }
        return try result.get()
    }
}
