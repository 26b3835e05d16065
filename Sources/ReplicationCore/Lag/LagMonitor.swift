import Foundation
import KafkaClient
public import Logging
import PostgresClient
public import ServiceLifecycle
import Synchronization

/// Measures one region's lag on its own thread, independent of its pipeline (so a stuck or
/// retrying pipeline still has true, growing figures):
///
/// every `interval`: the topic's partitions and watermarks (from the broker, through the
/// ``TopicWatermarks`` every region's monitor shares), the region's stored next offsets (from
/// its database — which is also the `region_up` probe; Kafka's committed offsets for the
/// region's group stand in when the database has never answered), and the Kafka timestamp of
/// the oldest unapplied record of each lagging partition (read once per offset).
///
/// A stored next offset below a partition's low watermark means retention deleted records the
/// region never applied: the gap is reported (`expired_events` in `/lag`, a metric, a warning),
/// never passed over in silence.
public final class LagMonitor: Service, @unchecked Sendable {
    // @unchecked Sendable: mutable state is confined to the monitor thread; `stop` is atomic.
    public let settings: PipelineSettings
    private let status: ReplicationStatus
    private let metrics: RegionMetrics
    private let logger: Logger
    private let interval: Duration
    private let stopRequested = Atomic<Bool>(false)

    private var db: PostgresConnection?
    /// The offsets table as ``Schema/check(_:table:)`` resolved it when `db` connected (the
    /// name the region's applier writes to), never re-resolved by the `search_path` later.
    private var offsetsTable = BookkeepingTables.unqualified.offsets
    private let watermarks: TopicWatermarks
    /// Group-less consumer reading the oldest unapplied records; closed after
    /// ``peekIdleClose`` without a read (an idle or caught-up region needs none, and each
    /// librdkafka client holds ~1.3 MB and six threads).
    private var consumer: KafkaConsumer?
    private var lastPeek = ContinuousClock.now
    static let peekIdleClose: Duration = .seconds(15)
    /// Consumer of the region's group, reading its committed offsets while the database has
    /// never answered (made once, not once per sample).
    private var groupConsumer: KafkaConsumer?
    private var partitions: Int?
    /// Low watermarks of the last sample: where retention has moved each partition's start.
    private var low: [Int32: Int64] = [:]
    private var databaseEverRead = false
    private var lastKafkaWarning: ContinuousClock.Instant?
    /// Expired (deleted before applied) records per partition, as last logged.
    private var expiredLogged: [Int32: Int64] = [:]

    /// - Parameter watermarks: the topic's watermarks, shared by every region's monitor.
    public init(settings: PipelineSettings, watermarks: TopicWatermarks, status: ReplicationStatus, metrics: RegionMetrics,
                logger: Logger, interval: Duration = .milliseconds(500)) {
        self.settings = settings
        self.watermarks = watermarks
        self.status = status
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "region"] = "\(settings.region)"
        logger[metadataKey: "loop"] = "lag-monitor"
        self.logger = logger
        self.interval = interval
    }

    public func run() async throws {
        await withGracefulShutdownAndCancellation(onStop: { self.stopRequested.store(true, ordering: .relaxed) }) {
            await BlockingThread.run(name: "lag-\(settings.region)") { self.loop() }
        }
    }

    private var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    private func loop() {
        defer {
            consumer?.close()
            groupConsumer?.close()
            db?.close()
        }
        while !stopping {
            let started = ContinuousClock.now
            status.heartbeat(region: settings.region, loop: "lag-monitor", timeout: .seconds(30))
            refresh()
            let region = status.snapshot().regions.first { $0.region == settings.region }!
            metrics.publish(region)
            logExpired(region)
            let next = started.advanced(by: interval)
            while ContinuousClock.now < next && !stopping { Thread.sleep(forTimeInterval: 0.05) }
        }
    }

    /// One measurement.
    func refresh() {
        readWatermarks()
        readStoredOffsets()
        readOldestUnapplied()
    }

    private func kafka() throws -> KafkaConsumer {
        if let consumer { return consumer }
        var conf = settings.kafka
        conf.set("socket.timeout.ms", "3000")
        let c = try KafkaConsumer(configuration: conf, groupID: nil)
        consumer = c
        return c
    }

    private func readWatermarks() {
        do {
            let sample = try watermarks.sample()
            partitions = sample.high.count
            low = sample.low
            status.watermarks(region: settings.region, sample.high, low: sample.low, at: sample.at)
        } catch {
            status.kafkaFailed(region: settings.region, problem: "\(error)")
            let now = ContinuousClock.now
            if lastKafkaWarning.map({ now - $0 > .seconds(30) }) ?? true {
                lastKafkaWarning = now
                logger.warning("cannot read high watermarks", metadata: ["error": "\(error)"])
            }
        }
    }

    private func readStoredOffsets() {
        do {
            if db == nil || !(db!.isOpen) {
                let c = try PostgresConnection(conninfo: settings.conninfo,
                                               applicationName: "region-replicator lag \(settings.region)",
                                               connectTimeoutSeconds: 2, queryTimeout: .seconds(2))
                do { offsetsTable = try Schema.check(c, table: settings.table).tables.offsets } catch {
                    c.close()
                    throw error
                }
                db = c
            }
            let r = try db!.query("""
                SELECT partition, next_offset, pg_is_in_recovery() AS in_recovery FROM \(offsetsTable)
                WHERE consumer_group = $1 AND topic = $2
                UNION ALL SELECT NULL, NULL, pg_is_in_recovery()
                """, [settings.consumerGroup, settings.topic])
            var next: [Int32: Int64] = [:]
            var readOnly = false
            for row in r.namedRows {
                if row["in_recovery"] == "t" { readOnly = true }
                if let p = row.integer("partition", as: Int32.self), let n = row.integer("next_offset", as: Int64.self) { next[p] = n }
            }
            if !databaseEverRead {
                databaseEverRead = true
                groupConsumer?.close()
                groupConsumer = nil
            }
            status.storedOffsets(region: settings.region, next, problem: readOnly ? "database is read-only (in recovery)" : nil)
        } catch {
            db?.close()
            db = nil
            var fallback: [Int32: Int64]? = nil
            if !databaseEverRead, let parts = partitions {
                do {
                    fallback = try committedInKafka(partitions: parts)
                } catch {
                    logger.debug("cannot read the group's committed offsets", metadata: ["error": "\(error)"])
                }
            }
            status.storedOffsets(region: settings.region, fallback, problem: "database unreachable: \(error)")
        }
    }

    /// The offsets the region's pipeline last committed to Kafka (after its database commits).
    private func committedInKafka(partitions: Int) throws -> [Int32: Int64] {
        let c: KafkaConsumer
        if let groupConsumer {
            c = groupConsumer
        } else {
            var conf = settings.kafka
            conf.set("socket.timeout.ms", "3000")
            c = try KafkaConsumer(configuration: conf, groupID: settings.consumerGroup)
            groupConsumer = c
        }
        let list = (0..<Int32(partitions)).map { TopicPartitionOffset(topic: settings.topic, partition: $0, offset: 0) }
        var out: [Int32: Int64] = [:]
        for e in try c.committed(list, timeoutMs: 2000) where e.offset >= 0 { out[e.partition] = e.offset }
        return out
    }

    /// Warns when retention deleted records of a partition before this region applied them
    /// (again when the gap grows; the pipeline counts them as it passes the gap).
    private func logExpired(_ region: RegionLag) {
        for p in region.partitions {
            let logged = expiredLogged[p.partition] ?? 0
            if p.expiredEvents > logged {
                logger.warning("records deleted by retention before this region applied them", metadata: [
                    "partition": "\(p.partition)", "next_offset": "\(p.nextOffset)", "low_watermark": "\(p.lowWatermark)",
                    "expired_events": "\(p.expiredEvents)"])
            }
            expiredLogged[p.partition] = p.expiredEvents
        }
    }

    private func readOldestUnapplied() {
        let wanted = status.unknownOldest(region: settings.region)
        guard !wanted.isEmpty else {
            if let c = consumer, ContinuousClock.now - lastPeek >= Self.peekIdleClose {
                c.close()
                consumer = nil
                logger.debug("closed the idle Kafka client that reads the oldest unapplied records")
            }
            return
        }
        lastPeek = ContinuousClock.now
        guard let c = try? kafka() else { return }
        do {
            // Read from the low watermark when retention already deleted the stored offset's
            // record (assigning below it would only make librdkafka reset, and warn, every time).
            try c.assign(wanted.map {
                TopicPartitionOffset(topic: settings.topic, partition: $0.partition, offset: max($0.offset, low[$0.partition] ?? 0))
            })
            var remaining = Dictionary(uniqueKeysWithValues: wanted.map { ($0.partition, $0.offset) })
            let deadline = ContinuousClock.now.advanced(by: .seconds(1))
            while !remaining.isEmpty && ContinuousClock.now < deadline && !stopping {
                guard case .record(let r)? = c.poll(timeoutMs: 100) else { continue }
                guard let offset = remaining[r.partition], r.offset >= offset else { continue }
                remaining[r.partition] = nil
                // A record before `r` that retention deleted is gone: `r` is the oldest unapplied one.
                status.oldestUnapplied(region: settings.region, partition: r.partition, offset: offset, timestampMs: r.timestampMs)
            }
            try c.assign([])
        } catch {
            logger.debug("cannot read the oldest unapplied records", metadata: ["error": "\(error)"])
        }
    }
}
