internal import CRdKafka

/// librdkafka's built-in mock cluster: real Kafka-protocol brokers on 127.0.0.1 random ports,
/// inside this process. For tests and the local demo only (slow, see notes).
public final class KafkaMockCluster: @unchecked Sendable {
    // @unchecked Sendable: the mock cluster API is thread-safe (it posts to the cluster thread).
    private let owner: OpaquePointer
    private let cluster: OpaquePointer

    /// Starts `brokers` mock brokers.
    public init(brokers: Int = 3) throws(KafkaError) {
        let raw = try KafkaConfiguration([("log_level", "3")]).makeConf()
        var errbuf = [CChar](repeating: 0, count: 512)
        guard let rk = rd_kafka_new(RD_KAFKA_PRODUCER, raw, &errbuf, errbuf.count) else {
            rd_kafka_conf_destroy(raw)
            throw KafkaError(code: .invalidConfiguration, message: "cannot create mock owner: \(String(errorBuffer: errbuf))")
        }
        guard let mc = rd_kafka_mock_cluster_new(rk, Int32(brokers)) else {
            rd_kafka_destroy(rk)
            throw KafkaError(code: .invalidConfiguration, message: "cannot create mock cluster")
        }
        owner = rk
        cluster = mc
    }

    deinit {
        rd_kafka_mock_cluster_destroy(cluster)
        rd_kafka_destroy(owner)
    }

    /// The bootstrap list, e.g. `127.0.0.1:34567,127.0.0.1:34568`.
    public var bootstrapServers: String { String(cString: rd_kafka_mock_cluster_bootstraps(cluster)) }

    /// Creates a topic.
    public func createTopic(_ name: String, partitions: Int, replicationFactor: Int = 1) throws(KafkaError) {
        let err = rd_kafka_mock_topic_create(cluster, name, Int32(partitions), Int32(replicationFactor))
        if err != RD_KAFKA_RESP_ERR_NO_ERROR { throw KafkaError(err, context: "create topic \(name)") }
    }

    /// Takes a broker down (connections refused) or brings it back. Broker ids start at 1.
    public func setBroker(_ id: Int32, up: Bool) {
        if up { rd_kafka_mock_broker_set_up(cluster, id) } else { rd_kafka_mock_broker_set_down(cluster, id) }
    }

    /// Delays every response of broker `id` by `milliseconds` (0: none): a slow broker, e.g. a
    /// group coordinator whose committed-offsets answer comes after the client's first seek.
    public func setRoundTripTime(_ id: Int32, milliseconds: Int) {
        rd_kafka_mock_broker_set_rtt(cluster, id, Int32(clamping: milliseconds))
    }
}
