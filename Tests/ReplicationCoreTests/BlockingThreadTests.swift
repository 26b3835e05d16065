import Foundation
import Testing

@testable import ReplicationCore

/// The names operators see in `top -H`, `perf` and `/proc/<pid>/task/*/comm`.
@Suite("Blocking threads")
struct BlockingThreadTests {
    /// The calling thread's name as the kernel keeps it.
    static func currentName() -> String {
        let text = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
        return text.hasSuffix("\n") ? String(text.dropLast()) : text
    }

    @Test("A thread carries its name, cut to Linux's 15 bytes on a character boundary", arguments: [
        ("fresh-eu", "fresh-eu"),
        ("fresh-watermarks", "fresh-watermark"),
        ("région-eu-west-1", "région-eu-west"),
        ("abcdefghijklmn€x", "abcdefghijklmn"),
    ])
    func names(name: String, shown: String) async throws {
        let seen = await BlockingThread.run(name: name) { Self.currentName() }
        #expect(seen == shown)
    }
}
