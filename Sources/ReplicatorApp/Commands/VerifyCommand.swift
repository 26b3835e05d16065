import ArgumentParser
import Foundation
import KafkaClient
import ReplicationCore

// MARK: - verify

/// `region-replicator verify`: do the regions hold the same messages and tombstones?
struct Verify: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare the regions' messages and tombstones; with --repair, make them converge.",
        discussion: """
            Checksums run inside each region's Postgres over key-range segments of message_id (and of \
            a hash of session_id for session tombstones); only segments that differ are bisected, and \
            only small differing segments are read row by row. Each region is read in one REPEATABLE \
            READ, READ ONLY transaction: nothing the applier or the application does is blocked. \
            Divergences found by the first pass are checked again once every region's stored offsets \
            have reached the topic's high watermarks as read after the first pass (at most \
            --settle-timeout seconds): only divergences that persist are reported, so events in \
            flight raise no alarm, nor does a message edited all the time (a streamed reply) whose \
            regions follow it. --repair writes the winner (the highest version; equal versions: \
            the greater content hash) or the tombstone to every region that lacks it, the origin \
            included, through the apply path's rules and lock, prints what it changed, and checks \
            the repaired divergences again; with --dry-run it writes nothing. \
            Exit codes: 0 consistent (or repaired, and the re-check found nothing left), 2 divergent \
            (also after --repair when something remains), 64 usage, 69 Kafka or a region \
            unreachable, 78 configuration error (unknown region), 1 other.
            """)

    @OptionGroup var options: ConfigOption
    @Option(name: .customLong("region"), help: "Compare only these regions (repeat; at least two). Default: every region.")
    var regionNames: [String] = []
    @Option(help: "Compare only this session's messages and tombstones.") var session: String?
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Write the winners to the regions that lack them.") var repair = false
    @Flag(name: .customLong("dry-run"), help: "With --repair: print what would change, write nothing.") var dryRun = false
    @Option(name: .customLong("settle-timeout"), help: "Seconds to wait for every region to apply the events in flight during the first pass.")
    var settleTimeout: Int = 60

    func validate() throws {
        if dryRun && !repair { throw ValidationError("--dry-run goes with --repair") }
        if settleTimeout < 0 { throw ValidationError("--settle-timeout must be ≥ 0 (got \(settleTimeout))") }
    }

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        var regions = config.regions
        if !regionNames.isEmpty {
            do { regions = try regionNames.map { name throws(ConfigError) in try config.region(named: name) } } catch {
                printError("configuration error: \(error)")
                throw ExitCode.configuration
            }
        }
        guard Set(regions.map(\.name)).count >= 2 else {
            printError("verify needs at least two regions (got \(regions.map(\.name).joined(separator: ", ")))")
            throw ExitCode.usage
        }
        var verifyOptions = VerifyOptions(schema: config.verifySchema, topic: config.kafka.topic)
        verifyOptions.sessionID = session
        verifyOptions.settleTimeout = .seconds(settleTimeout)
        let verifier = Verifier(targets: regions.map { config.verifyTarget($0) }, options: verifyOptions)
        let kafka = config.kafkaConfiguration
        let topic = config.kafka.topic
        let (repair, dryRun) = (self.repair, self.dryRun)
        typealias Done = (outcome: Verifier.Outcome, repaired: [Verifier.RepairResult]?, remaining: VerifyPass?)
        let result: Result<Done, VerifyError> = await BlockingThread.run(name: "verify") {
            defer { verifier.close() }
            do throws(VerifyError) {
                let outcome = try verifier.run(watermarks: { Self.highWatermarks(kafka, topic: topic) })
                var repaired: [Verifier.RepairResult]? = nil
                var remaining: VerifyPass? = nil
                if repair && !outcome.pass.divergences.isEmpty {
                    repaired = try verifier.repair(outcome.pass, dryRun: dryRun)
                    // What the repair could not make converge (a row a region refused, a
                    // winner gone meanwhile) is still divergent: read it all again.
                    if !dryRun { remaining = try verifier.recheck(outcome.pass) }
                }
                return .success((outcome, repaired, remaining))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .failure(let error):
            printError(redact("verify: \(error)"))
            switch error.kind {
            case .failed: throw ExitCode.failure
            case .schemaVersion: throw ExitCode.configuration
            case .regionUnavailable: throw ExitCode.unavailable
            }
        case .success(let (outcome, repaired, remaining)):
            let report = VerifyReport(outcome, regions: regions.map(\.name), repair: repaired, remaining: remaining, dryRun: dryRun,
                                      session: session)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                print(String(decoding: try encoder.encode(report), as: UTF8.self))
            } else {
                print(report.text)
            }
            if outcome.pass.divergences.isEmpty { return }
            if let remaining, remaining.divergences.isEmpty { return }
            throw ExitCode.divergent
        }
    }

    /// The topic's high watermarks now (a group-less consumer: nothing is committed).
    static func highWatermarks(_ kafka: KafkaConfiguration, topic: String) -> Result<[Int32: Int64], VerifyError> {
        do {
            var conf = kafka
            conf.set("socket.timeout.ms", "5000")
            let consumer = try KafkaConsumer(configuration: conf, groupID: nil)
            defer { consumer.close() }
            let n = try consumer.partitionCount(topic: topic, timeoutMs: 10_000)
            var out: [Int32: Int64] = [:]
            for p in 0..<Int32(n) { out[p] = try consumer.queryWatermarks(topic: topic, partition: p, timeoutMs: 10_000).high }
            return .success(out)
        } catch {
            return .failure(VerifyError(.regionUnavailable, "Kafka (\(topic)): cannot read the high watermarks that candidates are re-checked against: \(error)"))
        }
    }
}

extension ReplicatorConfig {
    /// How verify sees the messages table.
    var verifySchema: VerifySchema { VerifySchema(table: apply.table, columns: apply.columns) }

    func verifyTarget(_ region: Region) -> VerifyTarget {
        VerifyTarget(region: region.name, conninfo: region.dsn.value, consumerGroup: consumerGroup(for: region),
                     markApplierOrigin: captures(region))
    }
}

// MARK: - The report

/// What `verify` prints (`--json`: this structure, snake_case keys).
struct VerifyReport: Encodable {
    struct RegionReport: Encodable {
        var region: String
        var items: Int64
        var divergent: Int
        var missing: Int
        var stale: Int
        var resurrected: Int
        var only_here: Int
        var tombstone_missing: Int
        var session_tombstone_missing: Int
        var sample_sessions: [String]
        var replay_from: String?
        var replay_to: String?
        var replay_command: String?
        var lagging: String?
    }

    struct Item: Encodable {
        var region: String
        var kind: String
        var message_id: String?
        var session_id: String
        var have: String?
        var want: String?
    }

    struct RepairReport: Encodable {
        var region: String
        var dry_run: Bool
        var rows_written: Int
        var rows_deleted: Int
        var message_tombstones: Int
        var session_tombstones: Int
    }

    var consistent: Bool
    var settled: Bool
    var started_at: String
    var seconds: Double
    var session: String?
    var candidates: Int
    var segments_compared: Int
    var segments_differing: Int
    var items_fetched: Int
    var regions: [RegionReport]
    var divergences: [Item]
    var repair: [RepairReport]?
    /// After a repair (not a dry run): the divergences its re-check still found.
    var remaining: [Item]?

    init(_ o: Verifier.Outcome, regions names: [String], repair: [Verifier.RepairResult]?, remaining: VerifyPass? = nil,
         dryRun: Bool, session: String? = nil) {
        let summaries = RegionDivergenceSummary.make(o.pass.divergences, truths: o.pass.truths, regions: names)
        consistent = o.pass.divergences.isEmpty
        settled = o.lagging.isEmpty
        started_at = o.startedAt.rfc3339
        seconds = (o.seconds * 1000).rounded() / 1000
        self.session = session
        candidates = o.candidates
        segments_compared = o.pass.segmentsCompared
        segments_differing = o.pass.segmentsDiffering
        items_fetched = o.pass.itemsFetched
        regions = summaries.map { s in
            let from = s.replayFrom.map { Timestamp(microseconds: $0).rfc3339 }
            let to = s.replayTo.map { Timestamp(microseconds: $0).rfc3339 }
            return RegionReport(
                region: s.region, items: o.pass.items[s.region] ?? 0, divergent: s.total,
                missing: s.counts[.missing] ?? 0, stale: s.counts[.stale] ?? 0, resurrected: s.counts[.resurrected] ?? 0,
                only_here: s.counts[.onlyHere] ?? 0, tombstone_missing: s.counts[.tombstoneMissing] ?? 0,
                session_tombstone_missing: s.counts[.sessionTombstoneMissing] ?? 0, sample_sessions: s.sampleSessions,
                replay_from: from, replay_to: to,
                replay_command: from.flatMap { f in to.map { "region-replicator replay --region \(s.region) --from-time \(f) --to-time \($0)" } },
                lagging: o.lagging[s.region])
        }
        divergences = Self.items(o.pass.divergences)
        self.remaining = remaining.map { Self.items($0.divergences) }
        self.repair = repair.map { list in
            list.map { RepairReport(region: $0.region, dry_run: dryRun, rows_written: $0.rowsWritten, rows_deleted: $0.rowsDeleted,
                                    message_tombstones: $0.messageTombstones, session_tombstones: $0.sessionTombstones) }
        }
    }

    static func items(_ divergences: [Divergence]) -> [Item] {
        divergences.map { d in
            let session = d.kind == .sessionTombstoneMissing
            func render(_ v: Int64?) -> String? { v.map { session ? Timestamp(microseconds: $0).rfc3339 : "v\($0)" } }
            return Item(region: d.region, kind: d.kind.rawValue, message_id: d.messageID, session_id: d.sessionID,
                        have: render(d.have), want: render(d.want))
        }
    }

    static func line(_ d: Item) -> String {
        let what = d.message_id.map { "message \($0)" } ?? "session tombstone"
        return "  \(d.region) \(d.kind) \(what) session \(d.session_id) have \(d.have ?? "-") want \(d.want ?? "-")"
    }

    /// The human-readable form.
    var text: String {
        var lines: [String] = []
        let items = regions.map { "\($0.region) \($0.items)" }.joined(separator: ", ")
        lines.append("verify: compared \(regions.count) regions (items: \(items)) in \(String(format: "%.2f", seconds)) s: "
            + "\(segments_compared) segments, \(segments_differing) differing, \(items_fetched) items fetched")
        if consistent {
            lines.append("verify: CONSISTENT" + (candidates > 0 ? " (\(candidates) differences seen in the first pass were in flight and have converged)" : ""))
        } else {
            lines.append("verify: DIVERGENT: \(divergences.count) divergences persisted (\(candidates) in the first pass)")
        }
        for r in regions {
            if let l = r.lagging { lines.append("region \(r.region): did not catch up within the settle timeout (\(l)); its divergences may still be in flight") }
            guard r.divergent > 0 else { continue }
            lines.append("region \(r.region): missing \(r.missing), stale \(r.stale), resurrected \(r.resurrected), "
                + "only_here \(r.only_here), tombstone_missing \(r.tombstone_missing), session_tombstone_missing \(r.session_tombstone_missing)")
            lines.append("  sessions: \(r.sample_sessions.joined(separator: ", "))")
            if let c = r.replay_command { lines.append("  replay window: \(c)") }
        }
        let shown = divergences.prefix(200)
        for d in shown { lines.append(Self.line(d)) }
        if divergences.count > shown.count { lines.append("  … \(divergences.count - shown.count) more (--json lists all)") }
        for r in repair ?? [] {
            lines.append("repair \(r.region)\(r.dry_run ? " (dry run: nothing written)" : ""): \(r.dry_run ? "would write" : "wrote") "
                + "\(r.rows_written) rows, \(r.message_tombstones) message tombstones, \(r.session_tombstones) session tombstones; "
                + "\(r.dry_run ? "would delete" : "deleted") \(r.rows_deleted) rows")
        }
        if let remaining {
            if remaining.isEmpty {
                lines.append("verify: repaired: checked again, every repaired divergence has converged")
            } else {
                lines.append("verify: DIVERGENT after the repair: \(remaining.count) divergences remain (a region refused a write, or the winner changed meanwhile)")
                for d in remaining.prefix(200) { lines.append(Self.line(d)) }
                if remaining.count > 200 { lines.append("  … \(remaining.count - 200) more (--json lists all)") }
            }
        }
        return lines.joined(separator: "\n")
    }
}
