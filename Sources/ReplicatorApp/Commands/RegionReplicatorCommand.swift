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
                         // A capturing region also applies events of its own origin: another region's
                         // capture publishes a local edit of this region's message with its origin.
                         applyToOrigin: apply.applyToOrigin || captures(region), maxBatchEvents: apply.maxBatchEvents,
                         maxBatchDelay: .milliseconds(apply.maxBatchDelayMs), maxBatchBytes: apply.maxBatchBytes,
                         groupInstanceID: groupInstanceID(for: region))
        s.columns = apply.columns
        s.timeouts = ApplyTimeouts(statement: .milliseconds(apply.statementTimeoutMs), lock: .milliseconds(apply.lockTimeoutMs))
        s.markApplierOrigin = captures(region)
        return s
    }

    func captureSettings(for region: Region) -> CaptureSettings {
        CaptureSettings(region: region.name, conninfo: region.dsn.value, slot: capture.slotName(for: region.name),
                        publication: capture.publication, table: apply.table, columns: apply.columns, topic: kafka.topic,
                        kafka: kafkaConfiguration)
    }
}
