public import KafkaClient

/// Everything one region's capture needs to know.
public struct CaptureSettings: Sendable {
    public var region: String
    /// libpq conninfo (may hold a password; never logged).
    public var conninfo: String
    /// The region's logical replication slot (`pgoutput`).
    public var slot: String
    /// The publication of the messages table.
    public var publication: String
    public var table: TableName
    public var columns: MessageColumns
    public var topic: String
    /// The producer's librdkafka properties (bootstrap list and the user's); idempotence is added.
    public var kafka: KafkaConfiguration

    /// The name of capture's heartbeat (the systemd watchdog watches it).
    public static let loopName = "capture"
    /// Longest a healthy capture loop goes without a heartbeat.
    public static let heartbeatTimeout: Duration = .seconds(90)

    /// librdkafka properties of the capture producer that differ from librdkafka's defaults;
    /// the user's come after them. `message.timeout.ms` 0: a record waits for the brokers as long
    /// as they are away (the slot holds its WAL meanwhile) instead of failing after 5 minutes.
    public static let producerDefaults: [(String, String)] = [("message.timeout.ms", "0")]

    public init(region: String, conninfo: String, slot: String, publication: String, table: TableName,
                columns: MessageColumns, topic: String, kafka: KafkaConfiguration) {
        self.region = region
        self.conninfo = conninfo
        self.slot = slot
        self.publication = publication
        self.table = table
        self.columns = columns
        self.topic = topic
        self.kafka = kafka
    }

    /// The producer's properties: ``producerDefaults``, then ``kafka``.
    public var producerConfiguration: KafkaConfiguration {
        var conf = KafkaConfiguration(Self.producerDefaults)
        for (k, v) in kafka.properties { conf.set(k, v) }
        return conf
    }
}
