import Foundation

/// Tansu (a standalone Kafka-compatible broker, `RR_TEST_TANSU`) on a loopback port over plain
/// TCP, with its in-memory storage: a real broker of its own process that is not librdkafka's
/// mock cluster. Clients talk to it on librdkafka 2.16 only (``TLSKafkaBroker/librdkafka216``;
/// Debian's 2.0.2 cannot parse its ApiVersions reply). Stopped on release.
final class TansuBroker: @unchecked Sendable {
    let dir: String
    let port: Int
    private var tansu: ChildProcess?

    var bootstrap: String { "127.0.0.1:\(port)" }
    var log: String { (try? String(contentsOfFile: dir + "/tansu.log", encoding: .utf8)) ?? "" }

    init() throws {
        guard let binary = TLSKafkaBroker.tansuBinary, FileManager.default.isExecutableFile(atPath: binary),
              let libDir = ProcessInfo.processInfo.environment["RR_TEST_LIBRDKAFKA_DIR"],
              FileManager.default.fileExists(atPath: libDir + "/librdkafka.so.1") else {
            throw TestSetupError("RR_TEST_TANSU / RR_TEST_LIBRDKAFKA_DIR are not set: run the tests with `bash scripts/test` (its venv has Tansu and librdkafka 2.16)")
        }
        dir = NSTemporaryDirectory() + "rr-tansu-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        port = try freeLoopbackPort()
        do {
            tansu = try ChildProcess(binary, ["broker", "--listener-url", "tcp://127.0.0.1:\(port)",
                                              "--advertised-listener-url", "tcp://127.0.0.1:\(port)",
                                              "--storage-engine", "memory://tansu/"], outputPath: dir + "/tansu.log")
            try waitUntil("Tansu to listen on 127.0.0.1:\(port)", timeout: .seconds(20), interval: .milliseconds(20)) {
                guard tansu?.isRunning == true else { throw TestSetupError("tansu exited: \(log)") }
                return TLSKafkaBroker.accepts(port)
            }
        } catch {
            cleanUp()
            throw error
        }
    }

    func createTopic(_ name: String, partitions: Int) throws {
        try TestEnvironment.run(TLSKafkaBroker.tansuBinary!, ["topic", "create", name, "--partitions", String(partitions),
                                                              "--broker", "tcp://127.0.0.1:\(port)"], timeout: .seconds(30))
    }

    /// Produces `records` (key, value) with the confluent-kafka producer (librdkafka 2.16), waiting for every acknowledgement.
    func produce(topic: String, records: [(String, String)]) throws {
        try produceWithConfluentKafka(bootstrap: bootstrap, topic: topic, records: records, properties: [:])
    }

    private func cleanUp() {
        if let tansu {
            tansu.signal(SIGTERM)
            if (try? tansu.wait(timeout: .seconds(10))) == nil {
                tansu.signal(SIGKILL)
                _ = try? tansu.wait(timeout: .seconds(10))
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { cleanUp() }
}

/// Produces `records` (key, value) to `topic` through `bootstrap` with the confluent-kafka
/// producer of the test venv (librdkafka 2.16) and the client `properties`, waiting until every
/// one is acknowledged.
func produceWithConfluentKafka(bootstrap: String, topic: String, records: [(String, String)], properties: [String: String]) throws {
    guard let python = EventContractTests.python else {
        throw TestSetupError("RR_TEST_PYTHON is not set: run the tests with `bash scripts/test` (it makes the venv)")
    }
    let script = """
        import json, sys
        from confluent_kafka import Producer
        conf, topic, records = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
        failed = []
        p = Producer(conf)
        for key, value in records:
            p.produce(topic, key=key, value=value, on_delivery=lambda err, msg: err and failed.append(str(err)))
        left = p.flush(30)
        if left or failed:
            sys.exit(f"{left} records not delivered: {failed[:3]}")
        """
    var conf = properties
    conf["bootstrap.servers"] = bootstrap
    let json = { (o: Any) throws -> String in String(decoding: try JSONSerialization.data(withJSONObject: o), as: UTF8.self) }
    try TestEnvironment.run(python, ["-c", script, try json(conf), topic, try json(records.map { [$0.0, $0.1] })],
                            timeout: .seconds(60))
}
