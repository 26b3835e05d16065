import Foundation
import KafkaClient
public import Logging
import PostgresClient
public import ServiceLifecycle
import Synchronization

/// One region's capture: streams the region's logical replication slot on a thread of its own
/// and publishes the application's own writes to the messages table as events, with an
/// idempotent producer; the slot's confirmed position moves only past what Kafka acknowledged
/// (``CaptureCheckpoint``). The applier's writes arrive marked with its replication origin
/// (``ApplierOrigin``) and are never published again.
///
/// A failure of the stream, of a delivery or of the region's database ends the session; the
/// next one resumes from the slot's confirmed position, so whatever was not acknowledged is
/// sent again (the apply side treats it as a duplicate). What a person must fix (no slot,
/// replica identity not FULL, …) is retried slowly and logged until it is.
public final class RegionCapture: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is confined to the capture thread except
    // `stopRequested` (an Atomic).
    public let settings: CaptureSettings
    let logger: Logger
    let status: ReplicationStatus
    let mapper: CaptureEventMapper
    let reporter: CaptureReporter
    private let stopRequested = Atomic<Bool>(false)

    // Capture-thread state.
    var producer: KafkaProducer?
    /// The next event token: continues across sessions, so a late acknowledgement of an earlier
    /// session's event is never taken for one of the current session.
    var nextToken: UInt64 = 1
    var counts = Counts()

    struct Counts: CustomStringConvertible {
        var published = 0, acknowledged = 0, echoes = 0, unpublishable = 0, transactions = 0
        var description: String {
            "published=\(published) acknowledged=\(acknowledged) echo_transactions=\(echoes) unpublishable=\(unpublishable) transactions=\(transactions)"
        }
    }

    /// The end of a session that is not a failure: the daemon is stopping.
    struct Stopping: Error {}

    /// The slot is streamed by another process (another instance, or the walsender of this
    /// instance's previous session that has not noticed its end yet): stand by and retry.
    struct SlotBusy: Error, CustomStringConvertible {
        var message: String
        var description: String { "standing by: \(message)" }
    }

    /// - Parameter capture: the shared status `/lag` shows (nil: metrics only).
    public init(settings: CaptureSettings, status: ReplicationStatus, capture: CaptureStatus? = nil, logger: Logger) {
        self.settings = settings
        self.status = status
        reporter = CaptureReporter(region: settings.region, status: capture)
        var logger = logger
        logger[metadataKey: "region"] = "\(settings.region)"
        logger[metadataKey: "loop"] = "\(CaptureSettings.loopName)"
        self.logger = logger
        mapper = CaptureEventMapper(region: settings.region, columns: settings.columns)
    }

    /// Asks the loop to stop: it waits briefly for outstanding acknowledgements, confirms what
    /// it may, and returns.
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    func heartbeat() {
        status.heartbeat(region: settings.region, loop: CaptureSettings.loopName, timeout: CaptureSettings.heartbeatTimeout)
    }

    /// Runs capture on a dedicated thread until ``requestStop()``.
    public func run() async {
        await withGracefulShutdownAndCancellation(onStop: { self.requestStop() }) {
            await BlockingThread.run(name: "capture-\(settings.region)") { self.loop() }
        }
    }

    // MARK: - The loop (capture thread)

    private func loop() {
        logger.info("capture starting", metadata: ["slot": "\(settings.slot)", "publication": "\(settings.publication)",
                                                   "table": "\(settings.table)", "topic": "\(settings.topic)"])
        var backoff = Backoff()
        var slowBackoff = Backoff(initial: .seconds(5), maximum: .seconds(60))
        var standbyBackoff = Backoff(initial: Self.standbyRetry, maximum: Self.standbyRetry * 2)
        var standingBy = false
        while !stopping {
            heartbeat()
            let started = ContinuousClock.now
            do {
                let producer = try currentProducer()
                try session(producer)
            } catch is Stopping {
                break
            } catch let busy as SlotBusy {
                // Several instances: one streams the slot, the others wait for it quietly and
                // take over once its walsender is gone.
                reporter.streaming("\(busy)")
                logger.log(level: standingBy ? .debug : .info,
                           "capture standing by: another process streams the slot, retrying until it is free",
                           metadata: ["slot": "\(settings.slot)", "reason": "\(busy.message)"])
                standingBy = true
                backoff = Backoff()
                Backoff.wait(standbyBackoff.next(), slice: .milliseconds(200), stop: { stopping }, tick: heartbeat)
            } catch {
                standingBy = false
                reporter.streaming("\(error)")
                // A session that ran a while was healthy: start the backoff over.
                if ContinuousClock.now - started > .seconds(30) {
                    backoff = Backoff()
                    slowBackoff = Backoff(initial: .seconds(5), maximum: .seconds(60))
                }
                let needsPerson = error is CaptureSchema.Problem
                let delay = needsPerson ? slowBackoff.next() : backoff.next()
                logger.log(level: needsPerson ? .error : .warning,
                           needsPerson ? "capture cannot stream this region until this is fixed, retrying slowly" : "capture session ended, resuming from the slot's confirmed position",
                           metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)", "events": "\(counts)"])
                Backoff.wait(delay, slice: .milliseconds(200), stop: { stopping }, tick: heartbeat)
            }
        }
        reporter.streaming("stopped")
        if let producer {
            _ = try? producer.flush(timeoutMs: 5000)
            self.producer = nil
        }
        logger.info("capture stopped", metadata: ["events": "\(counts)"])
    }

    /// The producer, made anew after a fatal error.
    private func currentProducer() throws -> KafkaProducer {
        if let p = producer, p.fatalError == nil { return p }
        if let fatal = producer?.fatalError {
            logger.warning("the capture producer hit a fatal error: making a new one", metadata: ["error": "\(fatal)"])
        }
        producer = nil
        let p = try KafkaProducer(idempotent: settings.producerConfiguration)
        producer = p
        return p
    }
}

extension RegionCapture: Service {}
