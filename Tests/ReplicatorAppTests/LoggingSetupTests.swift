import Foundation
import Logging
import Synchronization
import Testing

@testable import ReplicatorApp

/// Collects the lines a handler writes.
final class CapturedLines: LogOutput {
    private let lines = Mutex<[String]>([])
    func write(_ line: String) { lines.withLock { $0.append(line) } }
    var all: [String] { lines.withLock { $0 } }
}

@Suite("Log output", .serialized)
struct LoggingSetupTests {
    func logger(_ format: ReplicatorConfig.LogFormat, journal: Bool, label: String = LoggingSetup.label) -> (Logger, CapturedLines) {
        let out = CapturedLines()
        let logger = Logger(label: label) { label in
            LoggingSetup.makeHandler(label: label, format: format, journal: journal, output: out)
        }
        return (logger, out)
    }

    @Test("Under journald: <N> priority prefix, no timestamp, key=value metadata, one line per event")
    func journalText() {
        let (logger, out) = logger(.text, journal: true)
        LoggingSetup.setLevel(.trace)
        defer { LoggingSetup.setLevel(.info) }
        logger.trace("t")
        logger.debug("d")
        logger.info("connected to the region's database", metadata: ["region": "eu-west-1", "database": "host=db port=5432"])
        logger.notice("n")
        logger.warning("w")
        logger.error("two\nlines")
        logger.critical("c")
        #expect(out.all == [
            "<7>trace t",
            "<7>debug d",
            "<6>info connected to the region's database database=\"host=db port=5432\" region=eu-west-1",
            "<5>notice n",
            "<4>warning w",
            "<3>error two\\nlines",
            "<2>critical c",
        ])
    }

    @Test("Elsewhere: an ISO 8601 UTC timestamp starts each line; other labels are named")
    func plainText() throws {
        let (logger, out) = logger(.text, journal: false, label: "ServiceLifecycle")
        logger.warning("apply failed, retrying", metadata: ["error": "say \"no\"", "empty": ""])
        let line = try #require(out.all.first)
        #expect(line.prefixMatch(of: #/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /#) != nil, "\(line)")
        #expect(line.hasSuffix(#" warning [ServiceLifecycle] apply failed, retrying empty="" error="say \"no\"""#), "\(line)")
    }

    @Test("json: one parseable object per line with level, priority, label, message and metadata")
    func json() throws {
        let (logger, out) = logger(.json, journal: false)
        logger.error("boom\nagain", metadata: ["region": "us-east-1", "message": "not the message"])
        let line = try #require(out.all.first)
        #expect(!line.contains("\n"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["message"] as? String == "boom\nagain", "the fixed keys win over metadata")
        #expect(object["level"] as? String == "error")
        #expect(object["priority"] as? Int == 3)
        #expect(object["label"] as? String == "region-replicator")
        #expect(object["region"] as? String == "us-east-1")
        #expect((object["ts"] as? String)?.prefixMatch(of: #/^\d{4}-\d\d-\d\dT/#) != nil)

        let (journalLogger, journalOut) = self.logger(.json, journal: true)
        journalLogger.warning("w")
        let journalLine = try #require(journalOut.all.first)
        #expect(journalLine.hasPrefix("<4>{"), "journald strips the prefix; MESSAGE stays pure JSON")
        #expect(try JSONSerialization.jsonObject(with: Data(journalLine.dropFirst(3).utf8)) is [String: Any])
    }

    @Test("The process-wide level applies to every existing logger at once; a logger's own level wins")
    func runtimeLevel() {
        let (logger, out) = logger(.text, journal: true)
        defer { LoggingSetup.setLevel(.info) }
        LoggingSetup.setLevel(.info)
        logger.debug("hidden")
        LoggingSetup.setLevel(.debug)
        #expect(LoggingSetup.currentLevel == .debug)
        logger.debug("shown")
        LoggingSetup.setLevel(.error)
        logger.warning("hidden too")
        var pinned = logger
        pinned.logLevel = .trace
        pinned.trace("pinned")
        #expect(out.all == ["<7>debug shown", "<7>trace pinned"])
    }

    @Test("JOURNAL_STREAM counts only when it names the very file standard error is")
    func journalStreamDetection() throws {
        let path = NSTemporaryDirectory() + "rr-journal-\(UUID().uuidString)"
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        defer { unlink(path) }
        let fd = open(path, O_WRONLY)
        #expect(fd >= 0)
        defer { close(fd) }
        var st = stat()
        #expect(fstat(fd, &st) == 0)
        #expect(LoggingSetup.isJournalStream("\(st.st_dev):\(st.st_ino)", fd: fd))
        #expect(!LoggingSetup.isJournalStream("\(st.st_dev):\(st.st_ino + 1)", fd: fd))
        #expect(!LoggingSetup.isJournalStream("garbage", fd: fd))
        #expect(!LoggingSetup.isJournalStream(nil, fd: fd))
    }
}
