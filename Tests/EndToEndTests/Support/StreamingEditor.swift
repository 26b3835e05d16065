import Foundation
import KafkaClient
import PostgresClient

/// The article's application streaming replies: it writes each message to its origin region's
/// database first and then publishes the event, and edits every message again every `period`
/// (a new version each time), on a thread of its own, until stopped.
final class StreamingEditor: @unchecked Sendable {
    let origin: String
    let messageIDs: [String]
    let session: String
    /// Whether edits are published (false: the origin's database only — the other regions never
    /// hear of them, as when the application's publisher is broken).
    let publishEdits: Bool
    private let db: PostgresConnection
    private let producer: KafkaProducer
    private let topic: String
    private let lock = NSLock()
    private var version: Int64 = 1
    private var stopped = false
    private var failure: (any Error)?
    private var thread: Thread?
    private let done = DispatchSemaphore(value: 0)

    static let createdAt = "2026-11-24T10:00:00.250000Z"

    init(_ h: Harness, origin: String, messages: Int, publishEdits: Bool = true) throws {
        self.origin = origin
        messageIDs = (0..<messages).map { _ in UUID().uuidString.lowercased() }
        session = "streamed-\(UUID().uuidString.prefix(8))"
        self.publishEdits = publishEdits
        db = try h.dbs.connect(origin)
        producer = try KafkaProducer(configuration: KafkaConfiguration([("bootstrap.servers", h.cluster.bootstrap), ("log_level", "3")]))
        topic = h.cluster.topic
    }

    deinit {
        stop()
        db.close()
    }

    /// The version every message has reached.
    var currentVersion: Int64 { lock.withLock { version } }

    private func content(_ i: Int, _ v: Int64) -> String { "streamed reply \(i), \(v) tokens so far" }

    private func publish(_ i: Int, version v: Int64) throws {
        let json: [String: Any] = ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": messageIDs[i],
                                   "session_id": session, "role": "assistant", "content": content(i, v), "origin_region": origin,
                                   "created_at": Self.createdAt, "version": v]
        try producer.produce(topic: topic, key: Array(session.utf8), value: Array(try JSONSerialization.data(withJSONObject: json)))
    }

    /// Writes and publishes every message at version 1.
    func create() throws {
        for i in messageIDs.indices {
            _ = try db.query("""
                INSERT INTO messages (message_id, session_id, role, content, region, created_at, version)
                VALUES ($1, $2, 'assistant', $3, $4, $5, 1)
                """, [messageIDs[i], session, content(i, 1), origin, Self.createdAt])
            try publish(i, version: 1)
        }
        try producer.flush(timeoutMs: 30_000)
    }

    /// Starts editing: every `period`, each message's next version, written then (maybe) published.
    func start(period: Duration = .milliseconds(100)) {
        let t = Thread { [self] in
            let started = ContinuousClock.now
            var tick = 0
            while !lock.withLock({ stopped }) {
                tick += 1
                let v = Int64(tick + 1)
                do {
                    for i in messageIDs.indices {
                        _ = try db.query("UPDATE messages SET version = $2, content = $3 WHERE message_id = $1",
                                         [messageIDs[i], String(v), content(i, v)])
                        if publishEdits { try publish(i, version: v) }
                    }
                } catch {
                    lock.withLock { failure = error }
                    break
                }
                lock.withLock { version = v }
                let due = started.advanced(by: period * tick)
                while ContinuousClock.now < due && !lock.withLock({ stopped }) { Thread.sleep(forTimeInterval: 0.005) }
            }
            done.signal()
        }
        thread = t
        t.start()
    }

    /// Stops editing and waits for the thread; safe to call more than once.
    func stop() {
        let running = lock.withLock { () -> Bool in
            defer { stopped = true }
            return thread != nil && !stopped
        }
        if running { done.wait() }
        try? producer.flush(timeoutMs: 10_000)
    }

    /// The first error the editing thread met, if any.
    var error: (any Error)? { lock.withLock { failure } }
}
