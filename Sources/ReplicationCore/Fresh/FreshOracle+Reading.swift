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
            while !stopped && !waiters.values.contains(where: { $0.round == nil }) {
                _ = cond.wait(until: Date().addingTimeInterval(0.5))
            }
            if stopped {
                cond.unlock()
                return
            }
            // Every waiter without a round arrived before this query is sent.
            let ids = waiters.compactMap { $0.value.round == nil ? $0.key : nil }
            roundsSent += 1
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
                brokerProblem = nil
                for id in ids where waiters[id] != nil {
                    waiters[id]!.round = round
                    waiters[id]!.readsAtRound = readCounts[waiters[id]!.region] ?? 0
                    wake.insert(waiters[id]!.region)
                }
                let done = answerAllLocked(region: nil)
                cond.broadcast()
                cond.unlock()
                for d in done { d() }
            } catch {
                consumer?.close()
                consumer = nil
                cond.lock()
                brokerProblem = "cannot read the topic's end offsets: \(error)"
                let done = ids.compactMap { waiters[$0]?.expired == true ? answerLocked($0, force: false) : nil }
                _ = cond.wait(until: Date().addingTimeInterval(0.2))
                cond.unlock()
                for d in done { d() }
            }
        }
    }

    func regionLoop(_ region: FreshRegion) {
        var db: PostgresConnection?
        var tables = BookkeepingTables.unqualified
        var lastRead: ContinuousClock.Instant?
        defer { db?.close() }
        while true {
            cond.lock()
            while !stopped {
                let waiting = waiters.values.contains { $0.region == region.name }
                if waiting && (wake.contains(region.name) || lastRead.map { ContinuousClock.now - $0 >= pollInterval } ?? true) { break }
                _ = cond.wait(until: Date().addingTimeInterval(waiting ? 0.005 : 0.5))
            }
            if stopped {
                cond.unlock()
                return
            }
            wake.remove(region.name)
            cond.unlock()
            lastRead = ContinuousClock.now
            let read = readRegion(region, db: &db, tables: &tables)
            cond.lock()
            reads[region.name] = read
            readCounts[region.name, default: 0] += 1
            let done = answerAllLocked(region: region.name)
            cond.unlock()
            for d in done { d() }
        }
    }

    private func readRegion(_ region: FreshRegion, db: inout PostgresConnection?,
                            tables: inout BookkeepingTables) -> FreshJudgement.RegionRead {
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
            return .init(next: next, deadLetters: dead, problem: nil)
        } catch {
            db?.close()
            db = nil
            return .init(next: [:], deadLetters: [:], problem: "database unreachable: \(error)")
        }
    }
}
