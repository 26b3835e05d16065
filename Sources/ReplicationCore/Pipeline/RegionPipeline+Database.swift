import Foundation
import KafkaClient
import PostgresClient

// The region's database: the connection, and the transactions of an apply attempt.
extension RegionPipeline {
    /// How one apply attempt on a ``Chunk`` ended.
    enum ChunkOutcome {
        case committed(ApplyResult, started: ContinuousClock.Instant)
        case failed(ApplyFailure, any Error)
    }

    /// Writes the single record of `chunk`, which the region refuses even alone, as a dead
    /// letter with `error`, together with its next offset.
    /// - Returns: nil when it committed; else how it failed.
    func deadLetterAlone(_ chunk: Chunk, error: any Error, _ consumer: KafkaConsumer) -> (ApplyFailure, any Error)? {
        do {
            let db = try ensureConnectedOnce()
            let started = ContinuousClock.now
            let result = try applier.deadLetter(chunk.decoded, error: "the region's database cannot apply this record even alone: \(error)",
                                                progress: chunk.progress, expectedOffsets: chunk.expected,
                                                consumerGroup: settings.consumerGroup, topic: settings.topic, on: db)
            logger.warning("record dead-lettered: the region's database cannot apply it even alone",
                           metadata: ["partition": "\(chunk.progress.first?.partition ?? -1)", "offset": "\(chunk.records.first?.offset ?? -1)",
                                      "error": "\(error)"])
            committed(result, chunk, started: started, consumer)
            return nil
        } catch let e as PostgresError {
            return (ApplyFailure.classify(e), e)
        } catch {
            return (.transient, error)
        }
    }

    // MARK: - The connection

    /// Connects (or reuses the connection), checking the schema on a new connection and
    /// resolving the bookkeeping tables' schema-qualified names.
    func ensureConnectedOnce() throws -> PostgresConnection {
        if let db, db.isOpen { return db }
        db = nil
        let c = try PostgresConnection.openForApply(conninfo: settings.conninfo, applicationName: "region-replicator \(settings.region)\(settings.shard.map { " \($0)" } ?? "")",
                                                    timeouts: settings.timeouts)
        if settings.markApplierOrigin { try ApplierOrigin.markSession(c) }
        let (missing, tables) = try Schema.check(c, table: settings.table)
        if !missing.isEmpty {
            c.close()
            throw PipelineError(description: "region \(settings.region) is not migrated (missing: \(missing.joined(separator: ", "))); run `region-replicator migrate`")
        }
        if let p = try Schema.versionProblem(c, table: settings.table, region: settings.region) { c.close(); throw PipelineError(description: "region \(settings.region): \(p)") }
        // The messages table itself: mapped columns, types, the unique index on the id column.
        let problems = try Schema.inspect(c, table: settings.table, columns: settings.columns)
        if !problems.isEmpty {
            c.close()
            throw PipelineError(description: "region \(settings.region) cannot be applied to: \(problems.map(\.description).joined(separator: " "))")
        }
        if tables != applier.tables {
            applier = RegionApplier(region: settings.region, table: settings.table, applyToOrigin: settings.applyToOrigin, tables: tables,
                                    columns: settings.columns)
        }
        db = c
        status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: true, problem: nil)
        logger.info("connected to the region's database", metadata: ["database": "\(PostgresConnection.describe(settings.conninfo))"])
        return c
    }

    /// Connects before subscribing, retrying forever (until stop); slowly while the schema
    /// does not fit.
    func ensureDatabase() {
        var backoff = Backoff()
        var schemaBackoff = ApplyPolicy.schemaBackoff()
        while !stopping {
            do {
                _ = try ensureConnectedOnce()
                return
            } catch {
                let schema = error is PipelineError || (error as? PostgresError).map { ApplyFailure.classify($0) == .schema } ?? false
                let delay = schema ? schemaBackoff.next() : backoff.next()
                status.pipelineDatabase(region: settings.region, pipeline: settings.loopName, connected: false,
                                        problem: schema ? "schema problem (the region stops until it is fixed): \(error)" : "\(error)")
                heartbeat()
                logger.warning("region database unavailable, retrying", metadata: ["error": "\(error)", "retry_in_ms": "\(delay.milliseconds)"])
                Backoff.wait(delay, slice: .milliseconds(500), stop: { stopping }, tick: heartbeat)
            }
        }
    }
}
