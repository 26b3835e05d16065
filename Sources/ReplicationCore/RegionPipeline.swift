import Foundation
public import KafkaClient
public import Logging
import PostgresClient
import Synchronization

/// Everything one region's pipeline needs to know.
public struct PipelineSettings: Sendable {
    public var region: String
    /// libpq conninfo (may hold a password; never logged).
    public var conninfo: String
    public var kafka: KafkaConfiguration
    public var topic: String
    public var consumerGroup: String
    public var table: TableName
    public var applyToOrigin: Bool
    public var maxBatchEvents: Int
    public var maxBatchDelay: Duration
    /// Static group membership: this region consumer's `group.instance.id` (nil: dynamic).
    public var groupInstanceID: String?

    /// librdkafka properties of each region's consumer that differ from librdkafka's defaults;
    /// `kafka.properties` overrides them. A dead member (a SIGKILLed instance) holds its
    /// partitions until its session times out: 10 s instead of librdkafka's 45 s.
    public static let consumerDefaults: [(String, String)] = [("session.timeout.ms", "10000")]

    public init(region: String, conninfo: String, kafka: KafkaConfiguration, topic: String, consumerGroup: String,
                table: TableName, applyToOrigin: Bool, maxBatchEvents: Int, maxBatchDelay: Duration,
                groupInstanceID: String? = nil) {
        self.region = region
        self.conninfo = conninfo
        self.kafka = kafka
        self.topic = topic
        self.consumerGroup = consumerGroup
        self.table = table
        self.applyToOrigin = applyToOrigin
        self.maxBatchEvents = maxBatchEvents
        self.maxBatchDelay = maxBatchDelay
        self.groupInstanceID = groupInstanceID
    }

    /// The properties of the region's group consumer: ``consumerDefaults``, then the user's,
    /// then `group.instance.id`.
    public var consumerConfiguration: KafkaConfiguration {
        var conf = KafkaConfiguration(Self.consumerDefaults)
        for (k, v) in kafka.properties { conf.set(k, v) }
        if let groupInstanceID { conf.set("group.instance.id", groupInstanceID) }
        return conf
    }
}

/// A fatal condition that stops the daemon (Kafka fatal error; never a database outage).
public struct PipelineError: Error, CustomStringConvertible {
    public var description: String
    /// The configuration is at fault (restarting cannot help): the daemon exits 78.
    public var isConfigurationProblem = false

    public init(description: String, isConfigurationProblem: Bool = false) {
        self.description = description
        self.isConfigurationProblem = isConfigurationProblem
    }

    /// A fatal error of `region`'s consumer. The broker fencing a static member means another
    /// running instance has the same `kafka.group_instance_id`: a configuration error.
    public static func fatalKafka(_ error: KafkaError, region: String, groupInstanceID: String?) -> PipelineError {
        if error.code == .fencedInstanceID {
            return PipelineError(description: "region \(region): the broker fenced this consumer (group.instance.id \(groupInstanceID ?? "?")): "
                + "another running instance has the same kafka.group_instance_id; give every instance its own (\(error))",
                isConfigurationProblem: true)
        }
        return PipelineError(description: "region \(region): fatal Kafka error: \(error)")
    }
}

/// One region's replication pipeline: its own consumer (group `<prefix>.<region>`), its own
/// database connection, its own thread.
///
/// The loop: poll up to `maxBatchEvents` records or `maxBatchDelay` → decode → one transaction
/// with rows, dead letters and next offsets → commit the offsets to Kafka. A transient database
/// failure pauses this region's partitions and retries the same batch with capped backoff,
/// forever; other regions are untouched (they have their own thread, consumer and connection).
public final class RegionPipeline: @unchecked Sendable {
    // @unchecked Sendable: all mutable state is confined to the pipeline thread except
    // `stopRequested` (an Atomic).
    public let settings: PipelineSettings
    private let logger: Logger
    private let applier: RegionApplier
    private let status: ReplicationStatus
    private let metrics: RegionMetrics
    private let stopRequested = Atomic<Bool>(false)

    // Pipeline-thread state.
    private var db: PostgresConnection?
    /// Owned partitions → next offset to apply (nil = not yet known: take the first record).
    private var owned: [Int32: Int64?] = [:]
    private var pending: [KafkaRecord] = []
    /// Partitions assigned or revoked during the current `pollBatch` call (see `fillBatch`).
    private var rebalancedDuringPoll: Set<Int32> = []
    private var lastProgressLog = ContinuousClock.now
    private var totals = OutcomeCounts()
    private var lastKafkaWarning: ContinuousClock.Instant?

    /// Longest a healthy loop goes without a heartbeat (a query may take up to its 60 s timeout).
    static let heartbeatTimeout: Duration = .seconds(90)

    public init(settings: PipelineSettings, status: ReplicationStatus, metrics: RegionMetrics, logger: Logger) {
        self.settings = settings
        self.status = status
        self.metrics = metrics
        var logger = logger
        logger[metadataKey: "region"] = "\(settings.region)"
        self.logger = logger
        self.applier = RegionApplier(region: settings.region, table: settings.table, applyToOrigin: settings.applyToOrigin)
    }

    /// Asks the loop to stop after the in-flight batch (committed or rolled back atomically).
    public func requestStop() { stopRequested.store(true, ordering: .relaxed) }

    private var stopping: Bool { stopRequested.load(ordering: .relaxed) }

    private func heartbeat() {
        status.heartbeat(region: settings.region, loop: "pipeline", timeout: Self.heartbeatTimeout)
    }

    /// Runs the pipeline on a dedicated thread until ``requestStop()``; returns when the thread ends.
    /// - Throws: ``PipelineError`` on a fatal Kafka error.
    public func run() async throws {
        let result: Result<Void, PipelineError> = await withGracefulShutdownAndCancellation(onStop: { self.requestStop() }) {
            await withCheckedContinuation { (cont: CheckedContinuation<Result<Void, PipelineError>, Never>) in
                let thread = Thread {
                    do {
                        try self.loop()
                        cont.resume(returning: .success(()))
                    } catch let e as PipelineError {
                        cont.resume(returning: .failure(e))
                    } catch {
                        cont.resume(returning: .failure(PipelineError(description: "\(error)")))
                    }
                }
                thread.name = "region-\(settings.region)"
                thread.start()
            }
        }
        try result.get()
    }

    // MARK: - The loop (pipeline thread)

    private func loop() throws {
        logger.info("pipeline starting", metadata: ["consumer_group": "\(settings.consumerGroup)", "topic": "\(settings.topic)"])
        ensureDatabase()
        if stopping { return }
        let consumer = try makeConsumer()
        defer {
            consumer.close()
            db?.close()
            logger.info("pipeline stopped", metadata: ["events": "\(totals)"])
        }
        do {
            try consumer.subscribe(topics: [settings.topic])
        } catch {
            throw PipelineError(description: "region \(settings.region): \(error)")
        }
        while !stopping {
            try fillBatch(consumer)
            if pending.isEmpty { continue }
            applyPending(consumer)
            logProgressIfDue()
        }
    }

    private func makeConsumer() throws -> KafkaConsumer {
        let logger = self.logger
        do {
            return try KafkaConsumer(
                configuration: settings.consumerConfiguration, groupID: settings.consumerGroup,
                rebalance: { [unowned self] event in self.rebalanced(event) },
                log: { level, facility, message in
                    logger.log(level: Self.logLevel(syslog: level), "librdkafka: \(message)", metadata: ["facility": "\(facility)"])
                })
        } catch {
            throw PipelineError(description: "region \(settings.region): \(error)")
        }
    }

    static func logLevel(syslog: Int32) -> Logger.Level {
        switch syslog {
        case ...2: .critical
        case 3: .error
        case 4: .warning
        case 5: .notice
        case 6: .info
        default: .debug
        }
    }

    /// Polls until the batch is full, or nothing more is ready, or `maxBatchDelay` after its
    /// first record.
    ///
    /// Records come from librdkafka in batches (`rd_kafka_consume_batch_queue`, up to what the
    /// apply batch still lacks). A rebalance served inside one such call can leave records of a
    /// partition fetched before it (old position) next to records fetched after it (the stored
    /// position): the records of every partition a rebalance touched during the call are then
    /// dropped, and the partition is re-positioned at its next offset to apply.
    private func fillBatch(_ consumer: KafkaConsumer) throws {
        var deadline: ContinuousClock.Instant? = nil
        while pending.count < settings.maxBatchEvents && !stopping {
            heartbeat()
            let timeout: Int32
            if let deadline {
                let left = deadline - ContinuousClock.now
                if left <= .zero { break }
                timeout = Int32(max(1, min(200, left.milliseconds)))
            } else {
                timeout = 200
            }
            rebalancedDuringPoll.removeAll(keepingCapacity: true)
            // rd_kafka_consume_batch_queue waits until it has *all* the records asked for or the
            // timeout passes: take what is there at once, and wait only for a first record.
            // Once a batch has records and nothing more is ready, it is applied at once:
            // waiting out max_batch_delay would only add latency when records trickle in, while
            // under a backlog the prefetched queue is never empty and batches fill up anyway
            // (and records that arrive during one apply make the next batch: group commit).
            var results = consumer.pollBatch(maxRecords: settings.maxBatchEvents - pending.count, timeoutMs: 0)
            if results.isEmpty {
                if deadline != nil { break }
                results = consumer.pollBatch(maxRecords: 1, timeoutMs: timeout)
            }
            let touched = rebalancedDuringPoll
            if !touched.isEmpty { reposition(touched, consumer) }
            if results.isEmpty {
                if deadline == nil && !pending.isEmpty { break }  // pending survived a retry episode
                continue
            }
            for result in results {
                switch result {
                case .error(let e, let fatal):
                    if fatal { throw PipelineError.fatalKafka(e, region: settings.region, groupInstanceID: settings.groupInstanceID) }
                    // librdkafka reports every failed connection attempt; one line per 30 s is enough.
                    let now = ContinuousClock.now
                    if lastKafkaWarning.map({ now - $0 >= .seconds(30) }) ?? true {
                        lastKafkaWarning = now
                        logger.warning("Kafka consumer error (librdkafka retries by itself)", metadata: ["error": "\(e)"])
                    } else {
                        logger.debug("Kafka consumer error", metadata: ["error": "\(e)"])
                    }
                case .record(let r):
                    if touched.contains(r.partition) { continue }  // re-read from its next offset
                    guard let entry = owned[r.partition] else { continue }  // revoked meanwhile
                    if let next = entry, r.offset < next { continue }  // already applied
                    pending.append(r)
                    if deadline == nil { deadline = ContinuousClock.now.advanced(by: settings.maxBatchDelay) }
                }
            }
        }
    }

    /// Seeks the still-owned `partitions` to their next offset to apply (after a rebalance in
    /// the middle of a batched poll; see `fillBatch`).
    private func reposition(_ partitions: Set<Int32>, _ consumer: KafkaConsumer) {
        var positions: [TopicPartitionOffset] = []
        for p in partitions.sorted() {
            guard let entry = owned[p] else { continue }
            let pendingNext = pending.last(where: { $0.partition == p }).map { $0.offset + 1 }
            let next = pendingNext ?? entry ?? TopicPartitionOffset.beginning
            positions.append(TopicPartitionOffset(topic: settings.topic, partition: p, offset: next))
        }
        guard !positions.isEmpty else { return }
        do {
            try consumer.seek(positions, timeoutMs: 5000)
        } catch {
            logger.warning("seek after a rebalance failed", metadata: ["error": "\(error)"])
        }
    }

    /// Applies `pending` in one transaction; retries transient failures forever (until stop).
    private func applyPending(_ consumer: KafkaConsumer) {
        var backoff = Backoff()
        var paused: [TopicPartitionOffset] = []
        defer {
            if !paused.isEmpty {
                // Records polled during the pause were discarded: restart fetching at our positions.
                let owned = self.owned.keys
                let positions = paused.filter { owned.contains($0.partition) }.map { p in
                    TopicPartitionOffset(topic: p.topic, partition: p.partition,
                                         offset: (self.owned[p.partition] ?? nil) ?? TopicPartitionOffset.storedOffset)
                }
                consumer.resume(positions)
                do { try consumer.seek(positions.filter { $0.offset >= 0 }, timeoutMs: 5000) } catch {
                    logger.warning("seek after retry failed", metadata: ["error": "\(error)"])
                }
            }
        }
        while !pending.isEmpty {
            let decoded = pending.map { r in
                DecodedRecord(record: RecordRef(topic: r.topic, partition: r.partition, offset: r.offset,
                                                key: r.key, value: r.value, timestampMs: r.timestampMs),
                              event: EventDecoder.decode(r.value))
            }
            let progress = Self.progress(of: pending)
            do {
                let db = try ensureConnectedOnce()
                let started = ContinuousClock.now
                let result = try applier.apply(decoded, progress: progress, consumerGroup: settings.consumerGroup,
                                               topic: settings.topic, on: db)
                let committedAt = Timestamp.now
                metrics.batchCommitted(result, duration: ContinuousClock.now - started,
                                       committedAtMs: committedAt.microseconds / 1000)
                status.committed(region: settings.region, progress: progress, at: committedAt.secondsSinceEpoch)
                totals = totals + result.counts
                for p in progress { owned[p.partition] = p.nextOffset }
                pending.removeAll(keepingCapacity: true)
                do {
                    try consumer.commit(progress.map { TopicPartitionOffset(topic: settings.topic, partition: $0.partition, offset: $0.nextOffset) },
                                        async: true)
                } catch {
                    logger.debug("Kafka commit failed (the region's database holds the offsets)", metadata: ["error": "\(error)"])
                }
                if backoff.attempt > 0 { logger.notice("region recovered", metadata: ["attempts": "\(backoff.attempt)"]) }
                return
            } catch {
                let delay = backoff.next()
                metrics.retried()
                status.pipelineDatabase(region: settings.region, connected: false, problem: "\(error)")
                logger.warning("apply failed, retrying", metadata: [
                    "error": "\(error)", "attempt": "\(backoff.attempt)", "retry_in_ms": "\(delay.milliseconds)"])
                if paused.isEmpty {
                    paused = owned.keys.map { TopicPartitionOffset(topic: settings.topic, partition: $0, offset: 0) }
                    consumer.pause(paused)
                }
                // Wait, serving the consumer (group heartbeats, rebalances) meanwhile.
                let until = ContinuousClock.now.advanced(by: delay)
                while ContinuousClock.now < until && !stopping {
                    heartbeat()
                    if case .error(let e, true)? = consumer.poll(timeoutMs: 100) {
                        logger.error("fatal Kafka error during retry", metadata: ["error": "\(e)"])
                    }
                }
                if stopping {
                    logger.notice("stopping: abandoning the uncommitted batch (it is re-read on restart)",
                                  metadata: ["records": "\(pending.count)"])
                    pending.removeAll()
                    return
                }
                pending.removeAll { owned[$0.partition] == nil }  // partitions revoked meanwhile
            }
        }
    }

    static func progress(of records: [KafkaRecord]) -> [PartitionProgress] {
        var byPartition: [Int32: PartitionProgress] = [:]
        for r in records {
            let next = r.offset + 1
            if let p = byPartition[r.partition], p.nextOffset >= next { continue }
            byPartition[r.partition] = PartitionProgress(partition: r.partition, nextOffset: next, lastRecordMs: r.timestampMs)
        }
        return byPartition.values.sorted { $0.partition < $1.partition }
    }

    // MARK: - Rebalance (called inside poll, on the pipeline thread)

    private func rebalanced(_ event: KafkaConsumer.RebalanceEvent) -> [TopicPartitionOffset] {
        switch event {
        case .revoked(let parts, let lost):
            for p in parts { owned[p.partition] = nil; rebalancedDuringPoll.insert(p.partition) }
            status.assignment(region: settings.region, revoked: parts.map(\.partition))
            pending.removeAll { r in parts.contains { $0.partition == r.partition } }
            logger.info("partitions revoked", metadata: ["partitions": "\(parts.map(\.partition).sorted())", "lost": "\(lost)"])
            return []
        case .assigned(let parts):
            var backoff = Backoff()
            while true {
                do {
                    let db = try ensureConnectedOnce()
                    let stored = try RegionApplier.storedOffsets(group: settings.consumerGroup, topic: settings.topic, on: db)
                    var positions: [TopicPartitionOffset] = []
                    for p in parts {
                        let start = stored[p.partition]
                        owned[p.partition] = .some(start)
                        rebalancedDuringPoll.insert(p.partition)
                        positions.append(TopicPartitionOffset(topic: p.topic, partition: p.partition,
                                                              offset: start ?? TopicPartitionOffset.beginning))
                    }
                    status.assignment(region: settings.region, assigned: parts.map(\.partition))
                    logger.info("partitions assigned", metadata: [
                        "positions": "\(positions.map { "\($0.partition)@\($0.offset < 0 ? "beginning" : String($0.offset))" })"])
                    return positions
                } catch {
                    if stopping {
                        for p in parts { owned[p.partition] = .some(nil) }
                        return parts.map { TopicPartitionOffset(topic: $0.topic, partition: $0.partition, offset: TopicPartitionOffset.storedOffset) }
                    }
                    let delay = backoff.next()
                    status.pipelineDatabase(region: settings.region, connected: false, problem: "\(error)")
                    logger.warning("cannot read stored offsets, retrying", metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)"])
                    heartbeat()
                    Thread.sleep(forTimeInterval: delay.seconds)
                }
            }
        }
    }

    // MARK: - Database connection

    /// Connects (or reuses the connection), checking the schema on a new connection.
    private func ensureConnectedOnce() throws -> PostgresConnection {
        if let db, db.isOpen { return db }
        db = nil
        let c = try PostgresConnection(conninfo: settings.conninfo, applicationName: "region-replicator \(settings.region)")
        try c.execute("SET jit = off; SET work_mem = '32MB'; SET statement_timeout = '60s'")
        let missing = try Schema.missingTables(c, table: settings.table)
        if !missing.isEmpty {
            throw PipelineError(description: "region \(settings.region) is not migrated (missing: \(missing.joined(separator: ", "))); run `region-replicator migrate`")
        }
        db = c
        status.pipelineDatabase(region: settings.region, connected: true, problem: nil)
        logger.info("connected to the region's database", metadata: ["database": "\(PostgresConnection.describe(settings.conninfo))"])
        return c
    }

    /// Connects before subscribing, retrying forever (until stop).
    private func ensureDatabase() {
        var backoff = Backoff()
        while !stopping {
            do {
                _ = try ensureConnectedOnce()
                return
            } catch {
                let delay = backoff.next()
                status.pipelineDatabase(region: settings.region, connected: false, problem: "\(error)")
                heartbeat()
                logger.warning("region database unavailable, retrying", metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)"])
                Thread.sleep(forTimeInterval: delay.seconds)
            }
        }
    }

    private func logProgressIfDue() {
        let now = ContinuousClock.now
        guard now - lastProgressLog >= .seconds(10) else { return }
        lastProgressLog = now
        logger.info("progress", metadata: ["events": "\(totals)",
                                           "next_offsets": "\(owned.compactMap { k, v in v.map { "\(k):\($0)" } }.sorted())"])
    }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
