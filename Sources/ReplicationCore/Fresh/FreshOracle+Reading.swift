import Foundation
import KafkaClient
import PostgresClient

// The oracle's two kinds of thread: one asks the broker for the topic's end offsets (one query
// per round, serving every waiter that arrived before it was sent), one per region reads the
// region's committed offsets and dead letters from its database.
extension FreshOracle {
    func watermarkLoop() {
        var consumer: KafkaConsumer?
        var scope: UInt64?
        defer { consumer?.close() }
        while true {
            cond.lock()
            while !stopped {
                // Rung by a waiter that needs a query; at most one query per `roundInterval`.
                let due = lastRoundStart.map { $0.advanced(by: roundInterval) } ?? .now
                let needed = waiters.values.contains(where: Self.needsRound)
                if needed && due <= .now { break }
                watermarkPacing = needed
                watermarkBell.sleep(cond, until: needed ? due : .now.advanced(by: .milliseconds(500)))
                watermarkPacing = false
            }
            if stopped {
                cond.unlock()
                return
            }
            // Every waiter without a round arrived (and saw the capturing regions confirm) before
            // this query is sent.
            let ids = waiters.compactMap { Self.needsRound($0.value) ? $0.key : nil }
            roundsSent += 1
            lastRoundStart = .now
            cond.unlock()
            do throws(KafkaError) {
                let c: KafkaConsumer
                if let consumer { c = consumer } else {
                    c = try KafkaConsumer(configuration: kafka, groupID: nil)
                    consumer = c
                }
                if scope == nil {
                    guard let id = c.clusterID(timeoutMs: 2000) else {
                        throw KafkaError(code: .timedOut, message: "the broker did not tell its cluster id")
                    }
                    scope = FreshToken.scope(clusterID: id, topic: topic)
                }
                let count = try c.partitionCount(topic: topic, timeoutMs: 2000)
                let partitions = Array(0..<Int32(clamping: max(0, count)))
                let end = try c.listOffsets(topic: topic, partitions: partitions, at: TopicPartitionOffset.end, timeoutMs: 2000)
                let low = try c.listOffsets(topic: topic, partitions: partitions, at: TopicPartitionOffset.beginning, timeoutMs: 2000)
                let round = FreshJudgement.Round(end: end, low: low, scope: scope!)
                cond.lock()
                knownScope = round.scope
                brokerProblem = nil
                for id in ids where waiters[id] != nil {
                    waiters[id]!.round = round
                    waiters[id]!.readsAtRound = readCounts[waiters[id]!.region] ?? 0
                    wake.insert(waiters[id]!.region)
                }
                let done = answerAllLocked(region: nil)
                for region in wake { regionBells[region]?.ringLocked() }
                cond.unlock()
                for d in done { d() }
            } catch {
                consumer?.close()
                consumer = nil
                cond.lock()
                let done = roundFailedLocked(ids: ids, problem: "cannot read the topic's end offsets: \(error)")
                cond.unlock()
                // Answered now, not after the pause before the next query.
                for d in done { d() }
                cond.lock()
                if !stopped { watermarkBell.sleep(cond, until: .now.advanced(by: .milliseconds(200))) }
                cond.unlock()
            }
        }
    }

    /// The watermark query for waiters `ids` failed: records the problem and returns the answers
    /// of the waiters it decides (to run after unlocking). Caller holds `cond`.
    func roundFailedLocked(ids: [Int], problem: String) -> [() -> Void] {
        brokerProblem = problem
        let now = ContinuousClock.now
        return ids.compactMap { waiters[$0]?.isExpired(at: now) == true ? answerLocked($0, force: false) : nil }
    }

    /// A waiter the next watermark query serves: none yet, and no capturing region to wait for.
    static func needsRound(_ w: Waiter) -> Bool { FreshJudgement.needsRound(hasRound: w.round != nil, capture: w.capture) }

    /// Some waiter needs a read of `region`: it asks about it, or waits for its capture slot.
    func needsRead(_ region: String) -> Bool {
        waiters.values.contains { $0.region == region || $0.capture.map { !$0.ready && $0.targets[region] != nil } ?? false }
    }

    func regionLoop(_ region: FreshRegion) {
        var db: PostgresConnection?
        var tables = BookkeepingTables.unqualified
        var lastRead: ContinuousClock.Instant?
        defer { db?.close() }
        while true {
            cond.lock()
            while !stopped {
                let waiting = needsRead(region.name)
                // Until the next poll is due; a commit of this process or a round wakes it sooner,
                // but reads are at most one per `roundInterval` (a read serves every waiter).
                let since = lastRead.map { ContinuousClock.now - $0 }
                let due = since.map { pollInterval - $0 } ?? .zero
                let woken = wake.contains(region.name)
                let paced = since.map { roundInterval - $0 } ?? .zero
                if waiting && ((woken && paced <= .zero) || due <= .zero) { break }
                let sleep = !waiting ? .milliseconds(500) : woken ? min(paced, due) : due
                regionBells[region.name]!.sleep(cond, until: .now.advanced(by: sleep))
            }
            if stopped {
                cond.unlock()
                return
            }
            wake.remove(region.name)
            // Waiters whose target this read's WAL position may set: they arrived before it is sent.
            let targetless = region.capturing ? Set(waiters.compactMap { id, w in
                w.capture.map { $0.targets[region.name] == .some(nil) } == true ? id : nil }) : []
            cond.unlock()
            lastRead = ContinuousClock.now
            let (read, capture) = readRegion(region, db: &db, tables: &tables)
            cond.lock()
            reads[region.name] = read
            readCounts[region.name, default: 0] += 1
            if let capture {
                for id in Array(waiters.keys) where waiters[id]?.capture != nil {
                    waiters[id]!.capture!.observe(region.name, capture, sentAfterArrival: targetless.contains(id))
                }
                // A waiter whose capturing regions all confirmed needs its watermark query now.
                if waiters.values.contains(where: Self.needsRound) { watermarkBell.ringLocked() }
            }
            let done = answerAllLocked(region: capture == nil ? region.name : nil)
            cond.unlock()
            for d in done { d() }
        }
    }

    /// The region's committed offsets and dead letters; for a capturing region also its WAL
    /// position and capture slot (the WAL position first: a slot read after it that confirms
    /// it proves every write before it was acknowledged by Kafka).
    private func readRegion(_ region: FreshRegion, db: inout PostgresConnection?,
                            tables: inout BookkeepingTables) -> (FreshJudgement.RegionRead, FreshCaptureRead?) {
        do {
            if db == nil || !(db!.isOpen) {
                let c = try PostgresConnection(conninfo: region.conninfo, applicationName: "region-replicator fresh \(region.name)",
                                               connectTimeoutSeconds: 2, queryTimeout: .seconds(2))
                do { tables = try Schema.check(c, table: region.table).tables } catch {
                    c.close()
                    throw error
                }
                db = c
            }
            let r = try db!.query("""
                SELECT 'o' AS kind, partition, next_offset AS value FROM \(tables.offsets) WHERE consumer_group = $1 AND topic = $2
                UNION ALL (SELECT 'd', partition, "offset" FROM \(tables.deadLetters)
                           WHERE topic = $2 AND NOT resolved AND partition IS NOT NULL AND "offset" IS NOT NULL LIMIT 10000)
                """, [region.consumerGroup, topic])
            var next: [Int32: Int64] = [:]
            var dead: [Int32: Set<Int64>] = [:]
            for row in r.namedRows {
                guard let p = row.integer("partition", as: Int32.self), let v = row.integer("value", as: Int64.self) else { continue }
                if row["kind"] == "o" { next[p] = v } else { dead[p, default: []].insert(v) }
            }
            var capture: FreshCaptureRead?
            if let slot = region.captureSlot {
                let wal = (try db!.query("SELECT pg_current_wal_lsn()::text").rows.first?.first ?? nil).flatMap { LSN(text: $0) }
                capture = FreshCaptureRead(wal: wal, slot: try SlotState.read(db!, slot: slot), problem: nil)
            }
            return (.init(next: next, deadLetters: dead, problem: nil), capture)
        } catch {
            db?.close()
            db = nil
            let problem = "database unreachable: \(error)"
            return (.init(next: [:], deadLetters: [:], problem: problem),
                    region.capturing ? FreshCaptureRead(wal: nil, slot: nil, problem: problem) : nil)
        }
    }
}
