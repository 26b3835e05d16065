import ArgumentParser
import Foundation
import KafkaClient

/// Development tool: a standalone mock Kafka cluster and a synthetic event producer, for the
/// local demo (`scripts/demo`) and manual experiments. Not part of the installed product.
@main
struct DevTool: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rr-devtool",
        abstract: "Development helpers for region-replicator (not installed).",
        subcommands: [Broker.self, Produce.self])

    /// librdkafka's warnings and errors as one plain line each on standard error (the tool has
    /// no logger; librdkafka itself never prints, see KafkaLog).
    static func reportLibraryLines() {
        KafkaLog.setProcessHandler { level, facility, message in
            guard level <= 4 else { return }
            FileHandle.standardError.write(Data("rr-devtool: librdkafka \(facility): \(message)\n".utf8))
        }
    }
}

/// Runs librdkafka's mock cluster as its own process until SIGTERM/SIGINT.
struct Broker: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run a mock Kafka cluster on 127.0.0.1 (librdkafka's mock brokers).")
    @Option var brokers = 3
    @Option var topic = "chat.messages"
    @Option var partitions = 6
    @Option(help: "Write the bootstrap list to this file once the topic exists.") var bootstrapFile: String?

    func run() throws {
        // SIGTERM/SIGINT end the cluster; SIGUSR1 sets every broker down (connections refused
        // and closed: a broker outage as clients see it), SIGUSR2 brings them back. The topic's
        // records live in this process, so an outage is simulated rather than a restart.
        // Blocked before any thread exists, so that every thread librdkafka starts inherits the
        // mask and only sigwait below ever takes these signals (none is lost to another thread).
        let handled = [SIGTERM, SIGINT, SIGUSR1, SIGUSR2]
        var set = sigset_t()
        sigemptyset(&set)
        for s in handled { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        DevTool.reportLibraryLines()
        let cluster = try KafkaMockCluster(brokers: brokers)
        try cluster.createTopic(topic, partitions: partitions)
        let bootstrap = cluster.bootstrapServers
        if let bootstrapFile {
            let tmp = bootstrapFile + ".tmp"
            try bootstrap.write(toFile: tmp, atomically: false, encoding: .utf8)
            _ = rename(tmp, bootstrapFile)
        }
        print("BOOTSTRAP=\(bootstrap)")
        fflush(nil)
        loop: while true {
            var sig: Int32 = 0
            sigwait(&set, &sig)
            switch sig {
            case SIGUSR1, SIGUSR2:
                let up = sig == SIGUSR2
                for id in 1...Int32(brokers) { cluster.setBroker(id, up: up) }
                print(up ? "brokers up" : "brokers down")
                fflush(nil)
            default:
                break loop
            }
        }
        withExtendedLifetime(cluster) {}
    }
}

/// Produces a synthetic chat workload (contract events and the article's seed-style events).
struct Produce: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Produce synthetic chat events.")
    @Option var brokers: String = ""
    @Option(help: "Write the events to this file, one JSON object a line, instead of producing them (no broker needed).")
    var jsonLines: String?
    @Option var topic = "chat.messages"
    @Option var count = 10_000
    @Option(help: "Events per second (0 = as fast as possible).") var rate = 2_000
    @Option(help: "Comma-separated origin regions.") var regions = "us-east-1,eu-west-1,ap-southeast-1"
    @Option var seed: UInt64 = 42

    func run() throws {
        DevTool.reportLibraryLines()
        let producer = jsonLines == nil ? try KafkaProducer(configuration: KafkaConfiguration([("bootstrap.servers", brokers)])) : nil
        var lines = Data()
        let origins = regions.split(separator: ",").map(String.init)
        var rng = SplitMix64(seed: seed)
        var messages: [(id: String, session: String, origin: String, version: Int, created: String)] = []
        let start = Date()
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for i in 0..<count {
            let origin = origins[Int(rng.next() % UInt64(origins.count))]
            let session = "sess-\(rng.next() % 500)"
            let now = iso.string(from: Date())
            let roll = rng.next() % 100
            var event: [String: Any]
            if roll < 10 && !messages.isEmpty {  // edit
                let k = Int(rng.next() % UInt64(messages.count))
                messages[k].version += 1
                let m = messages[k]
                event = ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": m.id, "session_id": m.session,
                         "role": "assistant", "content": "edited \(i)", "origin_region": m.origin, "created_at": m.created, "version": m.version]
            } else if roll < 13 && !messages.isEmpty {  // delete
                let k = Int(rng.next() % UInt64(messages.count))
                messages[k].version += 1
                let m = messages[k]
                event = ["type": "message.deleted", "event_id": UUID().uuidString, "message_id": m.id, "session_id": m.session,
                         "origin_region": m.origin, "occurred_at": now, "version": m.version]
            } else if roll < 14 {  // session erasure
                event = ["type": "session.deleted", "event_id": UUID().uuidString, "session_id": session,
                         "origin_region": origin, "occurred_at": now]
            } else if roll < 30 {  // the article's producer
                let naive = String(now.dropLast())  // datetime.utcnow().isoformat(): no offset
                event = ["session_id": session, "role": "user", "content": "seed message \(i)", "region": origin, "created_at": naive]
            } else {
                let id = UUID().uuidString.lowercased()
                messages.append((id, session, origin, 1, now))
                event = ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": id, "session_id": session,
                         "role": ["user", "assistant", "system", "tool"][Int(rng.next() % 4)], "content": "message \(i) from \(origin)",
                         "origin_region": origin, "created_at": now, "version": 1]
            }
            let data = try JSONSerialization.data(withJSONObject: event)
            guard let producer else {
                lines.append(data)
                lines.append(0x0A)
                continue
            }
            try producer.produce(topic: topic, key: Array(((event["session_id"] as? String) ?? "").utf8), value: Array(data))
            if rate > 0 {
                let due = start.addingTimeInterval(Double(i + 1) / Double(rate))
                let wait = due.timeIntervalSinceNow
                if wait > 0 { Thread.sleep(forTimeInterval: wait) }
            }
            if (i + 1) % 5000 == 0 { print("produced \(i + 1)/\(count)"); fflush(nil) }
        }
        if let jsonLines {
            try lines.write(to: URL(fileURLWithPath: jsonLines))
            print("wrote \(count) events to \(jsonLines)")
            return
        }
        try producer?.flush(timeoutMs: 30_000)
        print("produced \(count) events to \(topic)")
    }
}

/// A small deterministic PRNG, so a seed reproduces a workload.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
