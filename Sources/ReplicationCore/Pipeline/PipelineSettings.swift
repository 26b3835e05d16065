import Foundation
public import KafkaClient

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
    /// Most record key + value bytes in one apply transaction.
    public var maxBatchBytes: Int
    /// Static group membership: this region consumer's `group.instance.id` (nil: dynamic).
    public var groupInstanceID: String?

    /// librdkafka properties of each region's consumer that differ from librdkafka's defaults;
    /// `kafka.properties` overrides them. A dead member (a SIGKILLed instance) holds its
    /// partitions until its session times out: 10 s instead of librdkafka's 45 s.
    public static let consumerDefaults: [(String, String)] = [("session.timeout.ms", "10000")]

    /// Event field → column of ``table``.
    public var columns: MessageColumns = .standard

    /// The apply connection's statement timeout and what follows from it (the heartbeat timeout).
    public var timeouts = ApplyTimeouts()

    /// Marks every transaction of the pipeline's connection with one of the applier's
    /// replication origins (``ApplierOrigin``): the region captures its own writes, and capture
    /// must recognise the applier's as echoes.
    public var markApplierOrigin = false

    /// Which of the region's `apply.connections` pipelines this is (1…n); nil when the region
    /// has one. Every shard is an ordinary member of the region's consumer group: Kafka's
    /// assignment gives each its share of the partitions.
    public var shard: Int? = nil

    /// The name of this pipeline's heartbeat and status entry: `pipeline`, or `pipeline-<n>` for shard n.
    public var loopName: String { Self.loopName(shard: shard) }

    public static func loopName(shard: Int?) -> String { shard.map { "pipeline-\($0)" } ?? soleLoopName }

    /// The loop name of a region's only pipeline (`apply.connections` 1).
    public static let soleLoopName = "pipeline"

    /// The loop names of a region applied by `connections` pipelines.
    public static func loopNames(connections: Int) -> [String] {
        connections <= 1 ? [loopName(shard: nil)] : (1...connections).map { loopName(shard: $0) }
    }

    /// This settings' copy for shard `n` of `connections` (unchanged when `connections` is 1).
    public func shard(_ n: Int, of connections: Int) -> PipelineSettings {
        guard connections > 1 else { return self }
        var s = self
        s.shard = n
        return s
    }

    public init(region: String, conninfo: String, kafka: KafkaConfiguration, topic: String, consumerGroup: String,
                table: TableName, applyToOrigin: Bool, maxBatchEvents: Int, maxBatchDelay: Duration,
                maxBatchBytes: Int = 8 << 20, groupInstanceID: String? = nil) {
        self.region = region
        self.conninfo = conninfo
        self.kafka = kafka
        self.topic = topic
        self.consumerGroup = consumerGroup
        self.table = table
        self.applyToOrigin = applyToOrigin
        self.maxBatchEvents = maxBatchEvents
        self.maxBatchDelay = maxBatchDelay
        self.maxBatchBytes = maxBatchBytes
        self.groupInstanceID = groupInstanceID
    }

    /// Properties of each region's consumer that the pipeline depends on (the configuration
    /// loader refuses them in `kafka.properties`): only committed transactional records are
    /// ever applied, and the end of each partition is reported, with the offset the fetch
    /// continues at, so that transaction markers after the last record are stored past.
    public static let consumerManaged: [(String, String)] = [("isolation.level", "read_committed"), ("enable.partition.eof", "true")]

    /// The properties of the region's group consumer: ``consumerDefaults``, then the user's,
    /// then ``consumerManaged`` and `group.instance.id`.
    public var consumerConfiguration: KafkaConfiguration {
        var conf = KafkaConfiguration(Self.consumerDefaults)
        for (k, v) in kafka.properties { conf.set(k, v) }
        for (k, v) in Self.consumerManaged { conf.set(k, v) }
        if let groupInstanceID { conf.set("group.instance.id", shard.map { "\(groupInstanceID).\($0)" } ?? groupInstanceID) }
        // Tells the shards apart in the broker's view of the group (and its logs).
        if let shard { conf.set("client.id", "\(kafka.properties.last { $0.0 == "client.id" }?.1 ?? "region-replicator")-\(region)-\(shard)") }
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
