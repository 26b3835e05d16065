import ArgumentParser
import Foundation
import KafkaClient
import Logging
import PostgresClient
import ReplicationCore
import ServiceLifecycle

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
        let captureStatus = CaptureStatus(regions: config.regions.filter { config.captures($0) }.map {
            (region: $0.name, slot: config.captureSettings(for: $0).slot)
        })
        var services: [any Service] = []
        // shards[k]: every region's pipeline k+1. Listed shard by shard (all regions' last shards
        // last), so that the group's reverse-order shutdown stops every region's last shard
        // first, and the remaining shards of all regions settle in parallel.
        var shards: [[any Service]] = Array(repeating: [], count: config.apply.connections)
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
            // partitions among them; each applies and stores its own partitions' offsets. They
            // leave the group one after another, each once the group settled (ShardDepartures).
            let departures = config.apply.connections > 1 ? ShardDepartures() : nil
            for shard in 1...config.apply.connections {
                shards[shard - 1].append(RegionPipeline(settings: settings.shard(shard, of: config.apply.connections), status: status,
                                                        metrics: metrics, logger: logger, departures: departures))
            }
            monitors.append(LagMonitor(settings: settings, watermarks: watermarks, status: status, metrics: metrics, logger: logger))
            if config.captures(region) {
                services.append(RegionCapture(settings: config.captureSettings(for: region), status: status, capture: captureStatus,
                                              logger: logger))
            }
        }
        guard let listen = config.http.hostAndPort else {
            printError("configuration error: \(config.path): http.listen: not a host:port address")
            throw ExitCode.configuration
        }
        let redactor = Redactor(config: config)
        // `/fresh`: answers from each region's committed offsets, one watermark query per round;
        // token-less answers first wait for every other capturing region's slot.
        let oracle = FreshOracle(regions: config.regions.map { region in
            let settings = config.pipelineSettings(for: region)
            return FreshRegion(name: region.name, conninfo: settings.conninfo, table: settings.table,
                               consumerGroup: settings.consumerGroup,
                               captureSlot: config.captures(region) ? config.captureSettings(for: region).slot : nil)
        }, kafka: config.kafkaConfiguration, topic: config.kafka.topic, status: status,
           maxWaiters: config.http.freshMaxWaiters, logger: logger)
        let http = HTTPService(listen: listen, status: status, metrics: regionMetrics, registry: registry,
                               capture: captureStatus, logger: logger, redact: { redactor($0) },
                               fresh: FreshService(oracle: oracle, maxWaitMs: config.http.freshMaxWaitMs, redact: { redactor($0) }))
        let systemd = SystemdService(status: status, capture: captureStatus.snapshot().isEmpty ? nil : captureStatus,
                                     configPath: config.path, logger: logger)
        var antiEntropy: [any Service] = []
        if config.verify.enabled {
            antiEntropy.append(AntiEntropy(targets: config.regions.map { config.verifyTarget($0) }, schema: config.verifySchema,
                                           topic: config.kafka.topic, settings: config.verify.settings, status: status,
                                           logger: logger))
        }
        logger.info("starting", metadata: [
            "version": "\(replicatorVersion)", "topic": "\(config.kafka.topic)",
            "regions": "\(config.regions.map(\.name).joined(separator: ","))",
            "apply_connections": "\(config.apply.connections)",
            "capture": "\(config.regions.filter { config.captures($0) }.map(\.name).joined(separator: ","))"])
        let group = ServiceGroup(configuration: .init(
            // Shutdown runs in reverse order: the pipelines (last) drain and commit first, then
            // capture, the monitors, continuous verification, the HTTP endpoint and the systemd notifier.
            services: ([systemd, http, oracle] + antiEntropy + monitors + services + shards.flatMap { $0 }).map {
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
