import Foundation
import KafkaClient

/// Produces records at a steady rate on a thread of its own while a test does other things
/// (injects faults, kills instances). Its producer is idempotent and never gives a record up
/// (`message.timeout.ms=0`), so a broker outage delays records but never loses or duplicates them.
final class RateProducer: @unchecked Sendable {
    struct Record {
        var key: String
        var value: [UInt8]?
    }

    private let lock = NSLock()
    private var sent = 0
    private var failure: (any Error)?
    private var finished = false
    private var stopped = false
    private let done = DispatchSemaphore(value: 0)
    let total: Int

    convenience init(bootstrap: String, topic: String, records: [Record], perSecond: Double) throws {
        try self.init(bootstrap: bootstrap, topic: topic, count: records.count, perSecond: perSecond) { records[$0] }
    }

    /// `count` records made by `record` on the producer's thread as they are due (a long load
    /// without holding it all in memory).
    init(bootstrap: String, topic: String, count: Int, perSecond: Double, record: @escaping @Sendable (Int) -> Record) throws {
        total = count
        let producer = try KafkaProducer(configuration: KafkaConfiguration([
            ("bootstrap.servers", bootstrap), ("enable.idempotence", "true"), ("message.timeout.ms", "0"),
            ("log_level", "2")]))
        let thread = Thread { [self] in
            let start = ContinuousClock.now
            do {
                for i in 0..<count {
                    if isStopped { break }
                    let r = record(i)
                    let due = start.advanced(by: .seconds(Double(i) / perSecond))
                    let wait = due - ContinuousClock.now
                    if wait > .zero { Thread.sleep(forTimeInterval: Double(wait.components.seconds) + Double(wait.components.attoseconds) / 1e18) }
                    try producer.produce(topic: topic, key: Array(r.key.utf8), value: r.value)
                    lock.withLock { sent += 1 }
                }
                // Delivered, however long the broker is away (the test's own deadline bounds it).
                while !isStopped {
                    do {
                        try producer.flush(timeoutMs: 10_000)
                        break
                    } catch {}
                }
            } catch {
                lock.withLock { failure = error }
            }
            lock.withLock { finished = true }
            done.signal()
        }
        thread.start()
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    /// Stops producing (on a test's way out); pending records may be dropped.
    func stop() { lock.withLock { stopped = true } }

    /// Records handed to librdkafka so far.
    var produced: Int { lock.withLock { sent } }

    /// Waits until every record is produced and delivered.
    func finish(timeout: Duration) throws {
        let ok = done.wait(timeout: .now() + .milliseconds(Int(timeout.components.seconds * 1000)))
        guard ok == .success else { throw TestSetupError("the producer did not deliver \(total) records within \(timeout) (\(produced) enqueued)") }
        done.signal()  // later calls return at once
        if let failure = lock.withLock({ failure }) { throw failure }
    }
}
