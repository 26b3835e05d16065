public import ArgumentParser
import Foundation
import KafkaClient
import Logging
import PostgresClient
import ReplicationCore
import ServiceLifecycle

/// `region-replicator`: the root command.
public struct RegionReplicatorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "region-replicator",
        abstract: "Replicates chat-history events from one Kafka topic into every region's Postgres.",
        version: replicatorVersion,
        subcommands: [Run.self, Migrate.self, CheckConfig.self, Status.self, Replay.self, DeadLetters.self, Verify.self,
                      Version.self]
    )

    public init() {}
}

/// `--config PATH`, shared by every subcommand.
struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Configuration file (YAML).")
    var config: String = ReplicatorConfig.defaultPath

    /// Loads the configuration or exits 78 with a message naming the file and key.
    func load() throws -> ReplicatorConfig {
        do {
            return try ReplicatorConfig.load(path: config)
        } catch {
            printError("configuration error: \(error)")
            throw ExitCode.configuration
        }
    }
}

func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

extension ReplicatorConfig {
    /// The librdkafka properties: bootstrap list first, then the user's verbatim properties.
    var kafkaConfiguration: KafkaConfiguration {
        var c = KafkaConfiguration([("bootstrap.servers", kafka.brokers)])
        for (k, v) in kafka.properties.sorted(by: { $0.key < $1.key }) { c.set(k, v) }
        return c
    }

    func pipelineSettings(for region: Region) -> PipelineSettings {
        var s = PipelineSettings(region: region.name, conninfo: region.dsn.value, kafka: kafkaConfiguration,
                         topic: kafka.topic, consumerGroup: consumerGroup(for: region), table: apply.table,
                         applyToOrigin: apply.applyToOrigin, maxBatchEvents: apply.maxBatchEvents,
                         maxBatchDelay: .milliseconds(apply.maxBatchDelayMs), maxBatchBytes: apply.maxBatchBytes,
                         groupInstanceID: groupInstanceID(for: region))
        s.columns = apply.columns
        return s
    }
}

// MARK: - run

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the replication daemon.")
    @OptionGroup var options: ConfigOption

    func run() async throws {
        let config = try options.load()
        LoggingSetup.bootstrap(level: config.log.level, format: config.log.format)
        let logger = Logger(label: "region-replicator")
        let redactLibrary = Redactor(config: config)
        LibraryLogging.routeKafka(to: logger, redact: { redactLibrary($0) })
        do {
            try config.kafkaConfiguration.validate()
        } catch {
            printError("configuration error: \(config.path): kafka.properties: \(error)")
            throw ExitCode.configuration
        }
        // Before any metric handle is made: handles made earlier would go to the no-op backend.
        let registry = MetricsSetup.bootstrap()
        let status = ReplicationStatus(topic: config.kafka.topic, regions: config.regions.map(\.name),
                                       pipelines: PipelineSettings.loopNames(connections: config.apply.connections))
        var services: [any Service] = []
        var monitors: [any Service] = []
        var regionMetrics: [RegionMetrics] = []
        // One read of the topic's watermarks per sample serves every region's monitor.
        let watermarks = TopicWatermarks(kafka: config.kafkaConfiguration, topic: config.kafka.topic)
        defer { watermarks.close() }
        for region in config.regions {
            let settings = config.pipelineSettings(for: region)
            let metrics = RegionMetrics(region: region.name)
            regionMetrics.append(metrics)
            // `apply.connections` ordinary members of the region's consumer group: Kafka shares the
            // partitions among them; each applies and stores its own partitions' offsets.
            for shard in 1...config.apply.connections {
                services.append(RegionPipeline(settings: settings.shard(shard, of: config.apply.connections), status: status,
                                               metrics: metrics, logger: logger))
            }
            monitors.append(LagMonitor(settings: settings, watermarks: watermarks, status: status, metrics: metrics, logger: logger))
        }
        guard let listen = config.http.hostAndPort else {
            printError("configuration error: \(config.path): http.listen: not a host:port address")
            throw ExitCode.configuration
        }
        let redactor = Redactor(config: config)
        let http = HTTPService(listen: listen, status: status, metrics: regionMetrics, registry: registry,
                               logger: logger, redact: { redactor($0) })
        let systemd = SystemdService(status: status, configPath: config.path, logger: logger)
        var antiEntropy: [any Service] = []
        if config.verify.enabled {
            antiEntropy.append(AntiEntropy(targets: config.regions.map { config.verifyTarget($0) }, schema: config.verifySchema,
                                           topic: config.kafka.topic, settings: config.verify.settings, status: status,
                                           logger: logger))
        }
        logger.info("starting", metadata: [
            "version": "\(replicatorVersion)", "topic": "\(config.kafka.topic)",
            "regions": "\(config.regions.map(\.name).joined(separator: ","))",
            "apply_connections": "\(config.apply.connections)"])
        let group = ServiceGroup(configuration: .init(
            // Shutdown runs in reverse order: the pipelines (last) drain and commit first, then
            // the monitors, continuous verification, the HTTP endpoint and the systemd notifier.
            services: ([systemd, http] + antiEntropy + monitors + services).map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch let error as PipelineError where error.isConfigurationProblem {
            // Not restarted by systemd (RestartPreventExitStatus=78): restarting would only fence
            // the other instance in turn.
            logger.critical("stopping on a configuration error", metadata: ["error": "\(Redactor(config: config)("\(error)"))"])
            printError("configuration error: \(config.path): \(Redactor(config: config)("\(error)"))")
            throw ExitCode.configuration
        } catch {
            logger.critical("stopping on a fatal error", metadata: ["error": "\(Redactor(config: config)("\(error)"))"])
            throw ExitCode.failure
        }
        logger.info("stopped")
    }
}


// MARK: - migrate

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create the tables in each region (idempotent).")
    @OptionGroup var options: ConfigOption
    @Option(help: "Only this region.") var region: String?
    @Flag(name: .customLong("alter-existing-table"),
          help: "Also alter a messages table that migrate did not create: add what it lacks, the id trigger and the version default.")
    var alterExistingTable = false

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        var regions = config.regions
        if let region {
            do { regions = [try config.region(named: region)] } catch {
                printError("configuration error: \(error)")
                throw ExitCode.configuration
            }
        }
        var failed = false
        var incomplete = false
        for r in regions {
            let target = PostgresConnection.describe(r.dsn.value)
            do {
                let report = try await BlockingThread.run(name: "migrate") { [alterExistingTable] in
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator migrate")
                    defer { db.close() }
                    return try Schema.migrate(db, table: config.apply.table, columns: config.apply.columns,
                                              alterExistingTable: alterExistingTable)
                }
                for line in report.done { print("region \(r.name): \(line)") }
                for note in report.notes { print("region \(r.name): note: \(note)") }
                if let tz = try? await BlockingThread.run(name: "migrate", {
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator migrate")
                    defer { db.close() }
                    return try Schema.timeZoneWarning(db)
                }) {
                    print("region \(r.name): WARNING: \(tz)")
                }
                if report.problems.isEmpty {
                    print("region \(r.name) (\(target)): migrated")
                } else {
                    incomplete = true
                    for p in report.problems { printError("region \(r.name): \(p)") }
                    printError("region \(r.name) (\(target)): migrate incomplete: \(report.problems.count) problem(s) above need a person")
                }
            } catch {
                failed = true
                printError(redact("region \(r.name) (\(target)): migrate failed: \(error)"))
            }
        }
        if failed { throw ExitCode.unavailable }
        if incomplete { throw ExitCode.configuration }
    }
}

// MARK: - check-config

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Parse and validate the configuration, connect to Kafka and every region, print the results.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Seconds to wait for each service.") var timeout: Int = 5

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        let logger = Logger(label: "region-replicator")
        LibraryLogging.routeKafka(to: logger, cap: .debug, redact: { redact($0) })
        var rows: [(String, String, String)] = [("config", config.path, "ok")]
        do {
            try config.kafkaConfiguration.validate()
        } catch {
            rows.append(("kafka.properties", config.path, "ERROR: \(error)"))
            Self.printTable(rows, redact)
            throw ExitCode.configuration
        }
        var unreachable = false
        var tableProblems = false
        let kafkaStatus: String = await BlockingThread.run(name: "check-config") { [timeout] in
            // librdkafka's lines go to the trail (for the root cause) and to the logger at debug.
            let trail = KafkaErrorTrail()
            do {
                let consumer = try KafkaConsumer(configuration: config.kafkaConfiguration, groupID: nil, log: { level, facility, message in
                    trail.record(level: level, facility: facility, message: message)
                    logger.debug("librdkafka: \(redact(message))", metadata: ["facility": "\(facility)"])
                })
                defer { consumer.close() }
                let n = try consumer.partitionCount(topic: config.kafka.topic, timeoutMs: Int32(timeout * 1000))
                return "ok (topic \(config.kafka.topic): \(n) partitions)"
            } catch {
                guard let cause = trail.rootCause else { return "UNREACHABLE: \(error)" }
                return "UNREACHABLE: \(cause) (\(error))"
            }
        }
        if !kafkaStatus.hasPrefix("ok") { unreachable = true }
        rows.append(("kafka", config.kafka.brokers, kafkaStatus))
        for r in config.regions {
            let (status, problems, warnings): (String, [Schema.TableProblem], [String]) = await BlockingThread.run(name: "check-config") { [timeout] in
                do {
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator check-config",
                                                    connectTimeoutSeconds: timeout, queryTimeout: .seconds(timeout))
                    defer { db.close() }
                    let warnings = try Schema.timeZoneWarning(db).map { [$0] } ?? []
                    let missing = try Schema.missingTables(db, table: config.apply.table)
                    if !missing.isEmpty {
                        return ("ok, NOT MIGRATED (missing \(missing.joined(separator: ", "))): run `region-replicator migrate`", [], warnings)
                    }
                    let problems = try Schema.inspect(db, table: config.apply.table, columns: config.apply.columns)
                    return ("ok", problems, warnings)
                } catch {
                    return ("UNREACHABLE: \(error)", [], [])
                }
            }
            if !status.hasPrefix("ok") { unreachable = true }
            let target = PostgresConnection.describe(r.dsn.value)
            rows.append(("region \(r.name)", target, status))
            for w in warnings { rows.append(("region \(r.name)", target, "WARNING: \(w)")) }
            for p in problems {
                tableProblems = true
                rows.append(("region \(r.name)", target, "TABLE ERROR: \(p)"))
            }
        }
        Self.printTable(rows, redact)
        if unreachable { throw ExitCode.unavailable }
        if tableProblems { throw ExitCode.configuration }
    }

    static func printTable(_ rows: [(String, String, String)], _ redact: Redactor) {
        var table = TextTable(header: ["COMPONENT", "TARGET", "STATUS"])
        for (component, target, status) in rows { table.append([component, target, status]) }
        print(redact(table.rendered), terminator: "")
    }
}
