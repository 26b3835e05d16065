import Foundation
import ReplicationCore
import Testing

/// Hostile records through the real broker to a running daemon: the committed corpus
/// (`Fuzz/corpus`, minus its valid seeds) and multi-megabyte values generated here. Each must
/// become exactly one dead letter per region, with the decoder's precise error, while the good
/// records around them keep being applied: no crash, no stall.
///
/// The large values are 2 MiB, not the 10 MB of the decoder-level test: librdkafka's mock
/// cluster keeps only about 5 MB per partition and deletes older records beyond that (a 10 MB
/// record is gone as soon as it is appended). 2 MiB is still twice librdkafka's default
/// `max.partition.fetch.bytes` and over the 1 MiB content limit, and each goes to a partition
/// of its own.
@Suite("Hostile records end to end", .serialized)
struct HostileInputEndToEndTests {
    static let corpusDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz/corpus").path

    /// (Kafka key, value, partition or nil for by key) of every hostile record.
    static func hostileRecords() throws -> [(key: String, value: [UInt8], partition: Int32?)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: corpusDirectory).sorted().filter { (name: String) in !name.hasPrefix("ok--") }
        var out = try names.map { name -> (String, [UInt8], Int32?) in
            guard let data = FileManager.default.contents(atPath: corpusDirectory + "/" + name) else {
                throw TestSetupError("cannot read \(corpusDirectory)/\(name)")
            }
            return (name, Array(data), nil)
        }
        let size = 2 * 1024 * 1024
        let event = #"{"type":"message.upserted","event_id":"e","message_id":"5f7e9c52-1b2c-4d3e-8f40-123456789abc","session_id":"SESSION","role":"user","content":"CONTENT","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00Z","version":1}"#
        let big = String(repeating: "x", count: size)
        out.append(("generated--2MiB-content", Array(event.replacingOccurrences(of: "CONTENT", with: big).utf8), 0))
        out.append(("generated--2MiB-session-id", Array(event.replacingOccurrences(of: "SESSION", with: big).utf8), 1))
        out.append(("generated--2MiB-nesting", Array(String(repeating: "[", count: size).utf8), 2))
        return out
    }

    @Test("Every corpus record and 2 MiB values: one dead letter each per region with the decoder's error; good records before and after all applied")
    func hostileRecordsAreDeadLettered() throws {
        let hostile = try Self.hostileRecords()
        #expect(hostile.count >= 50, "the corpus at \(Self.corpusDirectory) looks incomplete")
        let port = try freeLoopbackPort()
        let h = try Harness(maxBatchEvents: 50, extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n")
        var w = Workload(origins: h.regions, seed: 61)
        w.generate(sessions: 10, messages: 300)
        w.shuffle()
        let daemon = try h.startDaemon()
        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        for r in hostile { try h.cluster.producer.produce(topic: h.cluster.topic, partition: r.partition, key: Array(r.key.utf8), value: r.value) }
        try h.cluster.produce(Array(w.events[half...]))
        do {
            try h.waitAllCaughtUp(timeout: .seconds(180))
        } catch {
            Issue.record("\(error); stored offsets: \(h.regions.map { (try? h.storedOffsets($0)) ?? [:] }); daemon log: \(daemon.log.suffix(6000))")
            return
        }

        #expect(daemon.isRunning, "the daemon died: \(daemon.log.suffix(2000))")
        try expectRegionsMatchModel(h, w)
        for region in h.regions {
            let rows = try h.dbs.query(region, """
                SELECT convert_from(record_key, 'UTF8'), coalesce(length(payload), 0), encode(substr(payload, 1, 64), 'hex'), error
                FROM replicator_dead_letters ORDER BY id
                """)
            var byKey: [String: [[String?]]] = [:]
            for row in rows { byKey[row[0] ?? "", default: []].append(row) }
            #expect(rows.count == hostile.count, "region \(region): \(rows.count) dead letters for \(hostile.count) hostile records")
            for r in hostile {
                guard let stored = byKey[r.key], stored.count == 1, let row = stored.first else {
                    Issue.record("region \(region): \(byKey[r.key]?.count ?? 0) dead letters for \(r.key)")
                    continue
                }
                #expect(row[1] == String(r.value.count), "region \(region), \(r.key): payload of \(row[1] ?? "?") bytes, sent \(r.value.count)")
                #expect(row[2] == r.value.prefix(64).map { String(format: "%02x", $0) }.joined(), "region \(region), \(r.key): payload differs")
                let error = row[3] ?? ""
                if r.value.isEmpty {
                    // librdkafka delivers an empty value as no value at all.
                    #expect(error.hasPrefix("empty_value: "), "region \(region), \(r.key): \(error)")
                } else {
                    guard case .failure(let expected) = EventDecoder.decode(r.value) else {
                        Issue.record("\(r.key) decodes: it does not belong among the hostile records"); continue
                    }
                    #expect(error == expected.description, "region \(region), \(r.key): dead letter says \(error)")
                }
                if !r.key.hasPrefix("generated--") {
                    // The corpus file's name says the reason.
                    let reason = String(r.key.prefix { $0 != "-" })
                    #expect(error.hasPrefix(reason + ": "), "region \(region), \(r.key): \(error)")
                }
            }
        }
        // Counted, and the daemon is alive and caught up.
        let endpoint = DaemonEndpoint(port: port)
        let metrics = try endpoint.metrics()
        for region in h.regions {
            let dead = metrics.first { $0.key.hasPrefix("region_replicator_events_total{") && $0.key.contains("outcome=\"dead_lettered\"")
                && $0.key.contains("region=\"\(region)\"") }?.value
            #expect(dead == Double(hostile.count), "region \(region): events_total{dead_lettered} = \(dead ?? -1)")
        }
        #expect(try endpoint.get("/health/live").status == 200)
        let lag = try endpoint.lag()
        for region in h.regions { #expect(lag[region]?.int("lag_events") == 0, "region \(region): \(lag[region] ?? [:])") }
        daemon.signal(SIGTERM)
        #expect(try daemon.wait() == 0)
    }
}
