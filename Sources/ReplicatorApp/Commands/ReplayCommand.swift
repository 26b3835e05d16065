import ArgumentParser
import Dispatch
import Foundation
import KafkaClient
import Logging
import ReplicationCore
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - replay

/// `region-replicator replay`: re-applies a range of the topic to one region (docs/operations.md).
struct Replay: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-apply a range of the topic to one region (safe while the daemon runs).",
        discussion: """
            Reads the range with its own consumer (no group, no offsets stored) and applies it through \
            the daemon's idempotent apply path: last-writer-wins and tombstones make re-applying harmless. \
            Ranges are half-open per partition: --from-* is inclusive, --to-* is exclusive; without --to-*, \
            the replay ends at the high watermarks read when it starts. Times are RFC 3339 and select by \
            Kafka record timestamp (through the broker's offsets-for-times; where the broker cannot answer, \
            the partition is read from its start and filtered by timestamp, and the output says so). \
            --dry-run classifies exactly as the real run would, on private temporary copies, and writes nothing. \
            Exit codes: 0 done, 64 usage, 69 Kafka or the region unreachable, 78 configuration error \
            (unknown region), 130 interrupted (Ctrl-C; what was applied is reported), 1 other.
            """)

    @OptionGroup var options: ConfigOption
    @Option(help: "The region to replay into.") var region: String
    @Option(name: .customLong("from-offset"), help: "First offset (inclusive), in every selected partition.") var fromOffset: Int64?
    @Option(name: .customLong("from-time"), help: "First record timestamp (inclusive), RFC 3339.") var fromTime: String?
    @Option(name: .customLong("to-offset"), help: "End offset (exclusive). Default: the high watermark at start.") var toOffset: Int64?
    @Option(name: .customLong("to-time"), help: "End record timestamp (exclusive), RFC 3339.") var toTime: String?
    @Option(help: "Only this partition.") var partition: Int32?
    @Flag(name: .customLong("dry-run"), help: "Read and classify; write nothing.") var dryRun = false

    func validate() throws {
        switch (fromOffset, fromTime) {
        case (nil, nil): throw ValidationError("give --from-offset N or --from-time T")
        case (.some, .some): throw ValidationError("give --from-offset or --from-time, not both")
        default: break
        }
        if toOffset != nil && toTime != nil { throw ValidationError("give --to-offset or --to-time, not both") }
        if let fromOffset, fromOffset < 0 { throw ValidationError("--from-offset must be ≥ 0 (got \(fromOffset))") }
        if let toOffset, toOffset < 0 { throw ValidationError("--to-offset must be ≥ 0 (got \(toOffset))") }
        if let fromOffset, let toOffset, toOffset < fromOffset {
            throw ValidationError("--to-offset \(toOffset) is before --from-offset \(fromOffset)")
        }
        let from = try fromTime.map { try Self.parseTime($0, option: "--from-time") }
        let to = try toTime.map { try Self.parseTime($0, option: "--to-time") }
        if let from, let to, to < from { throw ValidationError("--to-time \(toTime!) is before --from-time \(fromTime!)") }
        if let partition, partition < 0 { throw ValidationError("--partition must be ≥ 0 (got \(partition))") }
    }

    static func parseTime(_ text: String, option: String) throws -> Timestamp {
        guard let t = Timestamp(rfc3339: text) else {
            throw ValidationError("\(option) \(text): expected an RFC 3339 timestamp such as 2026-11-24T10:00:00Z")
        }
        return t
    }

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        // librdkafka's lines are diagnostics here (at debug); the replay's own output says what failed.
        LibraryLogging.routeKafka(to: Logger(label: "region-replicator"), cap: .debug, redact: { redact($0) })
        let target: ReplicatorConfig.Region
        do { target = try config.region(named: region) } catch {
            printError("configuration error: \(error)")
            throw ExitCode.configuration
        }
        let settings = config.pipelineSettings(for: target)
        let from: ReplayBound = try fromOffset.map { .offset($0) } ?? .time(Self.parseTime(fromTime ?? "", option: "--from-time"))
        var to: ReplayBound? = toOffset.map { .offset($0) }
        if let toTime { to = .time(try Self.parseTime(toTime, option: "--to-time")) }
        var request = ReplayRequest(
            region: target.name, conninfo: settings.conninfo, kafka: settings.kafka, topic: settings.topic,
            table: settings.table, applyToOrigin: settings.applyToOrigin, maxBatchEvents: settings.maxBatchEvents,
            from: from, to: to,
            partition: partition, dryRun: dryRun)
        request.columns = settings.columns
        request.timeouts = settings.timeouts
        request.markApplierOrigin = settings.markApplierOrigin
        let job = ReplayJob(request: request)
        let interrupts = InterruptHandler { count in
            if count == 1 {
                job.cancel()
                printError("interrupted: stopping after the batch in flight (Ctrl-C again to abort at once)")
            } else {
                Foundation.exit(130)
            }
        }
        defer { interrupts.cancel() }
        let display = ProgressDisplay(region: target.name, terminal: isatty(1) == 1)

        let outcome: Result<ReplaySummary, ReplayError> = await BlockingThread.run(name: "replay") {
            do throws(ReplayError) {
                return .success(try job.run(progress: { display.update($0) },
                                            notice: { display.notice(redact($0)) }))
            } catch {
                return .failure(error)
            }
        }
        display.finish()
        switch outcome {
        case .failure(let error):
            printError(redact("replay \(target.name): \(error)"))
            switch error.kind {
            case .usage: throw ExitCode.usage
            case .kafkaUnavailable, .regionUnavailable: throw ExitCode.unavailable
            case .failed: throw ExitCode.failure
            case .schemaVersion: throw ExitCode.configuration
            }
        case .success(let summary):
            for note in summary.notes where !note.hasPrefix("fallback:") { print(redact(note)) }
            if summary.skippedByTimestamp > 0 {
                print("skipped \(summary.skippedByTimestamp) records outside the time range (by record timestamp)")
            }
            print(Self.summaryLine(summary))
            if summary.interrupted { throw ExitCode(130) }
        }
    }

    /// `replay eu-west-1: read N records: applied A, duplicate D, stale S, skipped-origin O, dead-lettered X (dry run)`
    static func summaryLine(_ s: ReplaySummary) -> String {
        let c = s.counts
        var line = "replay \(s.region)\(s.interrupted ? " (interrupted)" : ""): read \(s.read) records: "
        if s.dryRun {
            line += "would apply \(c[.applied]), duplicate \(c[.duplicate]), stale \(c[.stale]), "
                + "skipped-origin \(c[.skippedOrigin]), dead-letter \(c[.deadLettered]) (dry run)"
        } else {
            line += "applied \(c[.applied]), duplicate \(c[.duplicate]), stale \(c[.stale]), "
                + "skipped-origin \(c[.skippedOrigin]), dead-lettered \(c[.deadLettered])"
        }
        return line
    }
}

// MARK: - Progress

/// Renders replay progress: a bar redrawn in place on a terminal, else a line every 5 s.
final class ProgressDisplay: @unchecked Sendable {
    // @unchecked Sendable: every mutable field is guarded by `lock`.
    private let region: String
    private let terminal: Bool
    private let lock = NSLock()
    private var lastLine = ContinuousClock.now
    private var drawn = false

    init(region: String, terminal: Bool) {
        self.region = region
        self.terminal = terminal
    }

    func update(_ p: ReplayProgress) {
        lock.lock()
        defer { lock.unlock() }
        if terminal {
            // At most ten redraws a second, and always the final state.
            let now = ContinuousClock.now
            guard now - lastLine >= .milliseconds(100) || p.done >= p.total else { return }
            lastLine = now
            write("\r\u{1B}[2K" + Self.bar(p))
            drawn = true
        } else {
            let now = ContinuousClock.now
            guard now - lastLine >= .seconds(5) else { return }
            lastLine = now
            write("replay \(region): \(p.phase) \(p.done)/\(p.total) records (\(Self.percent(p))), "
                + "\(Self.whole(p.rate)) records/s, ETA \(Self.eta(p))\n")
        }
    }

    /// A remark on its own line (the bar is redrawn below it).
    func notice(_ text: String) {
        lock.lock()
        defer { lock.unlock() }
        if drawn { write("\r\u{1B}[2K") }
        write(text + "\n")
        drawn = false
    }

    func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drawn { write("\n") }
        drawn = false
    }

    private func write(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }

    static func percent(_ p: ReplayProgress) -> String {
        p.total == 0 ? "100%" : "\(whole(Double(p.done) * 100 / Double(p.total)))%"
    }

    static func eta(_ p: ReplayProgress) -> String {
        guard p.rate > 0, p.total > p.done else { return p.total <= p.done ? "0s" : "--" }
        let s = whole(Double(p.total - p.done) / p.rate)
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }

    static func bar(_ p: ReplayProgress) -> String {
        let width = 30
        let fraction = p.total == 0 ? 1 : min(1, Double(p.done) / Double(p.total))
        let filled = Int(fraction * Double(width))
        return "\(p.phase) [" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
            + "] \(p.done)/\(p.total) \(percent(p)) \(whole(p.rate))/s ETA \(eta(p))"
    }

    /// `x` rounded down to a whole number for display, within ±10^15 (the figures derive from
    /// the broker's watermarks: a conversion must not trap, whatever they say); NaN gives 0.
    static func whole(_ x: Double) -> Int {
        guard !x.isNaN else { return 0 }
        return Int(min(max(x, -1e15), 1e15).rounded(.towardZero))
    }
}

// MARK: - Ctrl-C

/// Turns SIGINT (and SIGTERM) into calls of `handler(count)` on a dispatch queue, instead of the
/// default "die at once".
final class InterruptHandler: @unchecked Sendable {
    // @unchecked Sendable: `sources` is immutable after init; dispatch sources are thread-safe.
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (Int) -> Void) {
        let count = SignalCount()
        let queue = DispatchQueue(label: "region-replicator.signals")
        sources = [SIGINT, SIGTERM].map { sig in
            signal(sig, SIG_IGN)
            let s = DispatchSource.makeSignalSource(signal: sig, queue: queue)
            s.setEventHandler {
                let n = count.value.wrappingAdd(1, ordering: .relaxed).newValue
                handler(n)
            }
            s.resume()
            return s
        }
    }

    func cancel() {
        for s in sources { s.cancel() }
    }
}

/// How many signals arrived (a class, since an `Atomic` cannot be captured by an escaping closure).
private final class SignalCount: Sendable {
    let value = Atomic<Int>(0)
}
