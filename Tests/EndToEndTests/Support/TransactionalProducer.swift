import Foundation

/// A transactional producer — confluent-kafka from the test venv (`RR_TEST_PYTHON`, as the
/// article's application would publish) — and a broker that writes transaction markers:
/// librdkafka 2.0.2's mock cluster accepts transactions but writes no commit or abort marker
/// (its EndTxn handler only answers), the mock cluster of the newer librdkafka inside the
/// confluent-kafka wheel does. `rr-devtool broker` runs on that library through `LD_LIBRARY_PATH`.
struct TransactionalProducer {
    let python: String
    /// Holds `librdkafka.so.1`, the wheel's library.
    let libraryDirectory: String

    init(dir: String) throws {
        guard let python = ProcessInfo.processInfo.environment["RR_TEST_PYTHON"] else {
            throw TestSetupError("RR_TEST_PYTHON is not set: run the tests with `bash scripts/test` (it makes the venv)")
        }
        self.python = python
        let found = try TestEnvironment.run(python, ["-c", """
            import confluent_kafka, glob, os
            print(sorted(glob.glob(os.path.join(os.path.dirname(confluent_kafka.__file__) + '.libs', 'librdkafka*.so*')))[0])
            """]).trimmingCharacters(in: .whitespacesAndNewlines)
        libraryDirectory = dir + "/librdkafka-newer"
        try FileManager.default.createDirectory(atPath: libraryDirectory, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: libraryDirectory + "/librdkafka.so.1", withDestinationPath: found)
    }

    /// The broker process's environment: the wheel's librdkafka.
    var brokerEnvironment: [String: String] { ["LD_LIBRARY_PATH": libraryDirectory] }

    /// Produces `events` in committed transactions of `perTransaction` records each.
    func produce(_ events: [Workload.Event], perTransaction: Int, brokers: String, topic: String, dir: String) throws {
        let file = dir + "/transactional-events.jsonl"
        var lines = Data()
        for e in events {
            lines.append(try JSONSerialization.data(withJSONObject: ["key": e.key, "value": e.json]))
            lines.append(0x0A)
        }
        try lines.write(to: URL(fileURLWithPath: file))
        try TestEnvironment.run(python, ["-c", """
            import json, sys
            from confluent_kafka import Producer
            brokers, topic, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
            events = [json.loads(l) for l in open(path)]
            p = Producer({'bootstrap.servers': brokers, 'transactional.id': 'rr-test-transactional'})
            p.init_transactions(30)
            for i in range(0, len(events), n):
                p.begin_transaction()
                for e in events[i:i + n]:
                    p.produce(topic, key=e['key'].encode(), value=json.dumps(e['value']).encode())
                p.commit_transaction(30)
            print('produced', len(events))
            """, brokers, topic, file, String(perTransaction)], timeout: .seconds(120))
    }
}
