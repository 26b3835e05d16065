import Foundation
import KafkaClient

/// Records whose Kafka *metadata* is hostile — timestamps in the wrong unit or far from now,
/// keys that are absent, empty, binary or large, headers many, large, null or repeated — while
/// their values are valid events (so each must apply), plus one record whose value is not JSON
/// under a 64 KiB binary key (one dead letter per region, the key kept byte for byte).
///
/// Used by `RecordMetadataTests` and by the chaos suite's `hostile_metadata` fault.
enum HostileMetadata {
    /// The origin region of every event: configured nowhere, so every region applies them.
    static let origin = "hostile-metadata-producer"

    /// Kafka timestamps (ms) a broken producer sends. librdkafka's producer sends every value
    /// but 0 as given (0 means "now"); the consumer reports negative ones as "no timestamp".
    static func timestamps(nowMs: Int64) -> [(what: String, ms: Int64)] {
        [("nanoseconds instead of milliseconds", nowMs * 1_000_000),
         ("2^62", 1 << 62),
         ("Int64.max", .max),
         ("zero (librdkafka stamps now)", 0),
         ("negative", -5),
         ("1 ms after the epoch", 1),
         ("the first millisecond of year 10000", 253_402_300_800_000),
         ("ten years ahead", nowMs + 315_360_000_000)]
    }

    struct Record {
        var what: String
        var partition: Int32
        var key: [UInt8]?
        var value: [UInt8]
        var timestampMs: Int64?
        var headers: [(name: String, value: [UInt8]?)] = []
        /// The session of its event (nil: not an event, a dead letter).
        var session: String?
        var content: String?
    }

    static func event(session: String, content: String) -> [UInt8] {
        let json: [String: Any] = ["type": "message.upserted", "event_id": UUID().uuidString,
                                   "message_id": UUID().uuidString.lowercased(), "session_id": session, "role": "user",
                                   "content": content, "origin_region": origin, "created_at": "2026-11-24T10:00:00.123456Z",
                                   "version": 1]
        return Array(try! JSONSerialization.data(withJSONObject: json))
    }

    /// Every hostile record once, spread over `partitions` partitions; `tag` makes the sessions unique.
    /// - Parameter large: the 64 KiB keys and the 256 KiB header at full size (else 4 KiB: the
    ///   chaos suite's broker keeps only about 5 MB a partition).
    static func records(tag: String, partitions: Int, large: Bool = true,
                        nowMs: Int64 = Int64(Date().timeIntervalSince1970 * 1000)) -> [Record] {
        let big = large ? 65_536 : 4_096
        var out: [Record] = []
        func add(_ what: String, key: [UInt8]?, timestampMs: Int64? = nil, headers: [(name: String, value: [UInt8]?)] = []) {
            let session = "meta-\(tag)-\(out.count)"
            let content = "hostile metadata: \(what)"
            out.append(Record(what: what, partition: Int32(out.count % partitions), key: key,
                              value: event(session: session, content: content), timestampMs: timestampMs, headers: headers,
                              session: session, content: content))
        }
        for (what, ms) in timestamps(nowMs: nowMs) { add("timestamp \(what)", key: Array("meta-\(tag)".utf8), timestampMs: ms) }
        add("no key", key: nil)
        add("empty key", key: [])
        add("\(big / 1024) KiB binary key", key: [UInt8](repeating: 0xFF, count: big))
        add("key with NUL and invalid UTF-8", key: [0x00, 0xC3, 0x28, 0x00])
        add("1,000 headers, repeated names", key: Array("k".utf8),
            headers: (0..<1_000).map { (name: "h\($0 % 7)", value: Array("\($0)".utf8)) })
        add("a 256 KiB header, an empty name, a null and an empty value", key: Array("k".utf8),
            headers: [(name: "big", value: [UInt8](repeating: 0xAB, count: 4 * big)), (name: "", value: Array("x".utf8)),
                      (name: "null", value: nil), (name: "empty", value: [])])
        add("headers and an Int64.max timestamp", key: nil, timestampMs: .max,
            headers: [(name: "traceparent", value: [UInt8](repeating: 0, count: 64))])
        out.append(Record(what: "not JSON under a 64 KiB binary key", partition: Int32(out.count % partitions),
                          key: [UInt8](repeating: 0xFE, count: big), value: Array("not json {".utf8),
                          timestampMs: 1 << 62, session: nil, content: nil))
        return out
    }

    static func produce(_ records: [Record], topic: String, with producer: KafkaProducer) throws {
        for r in records {
            try producer.produce(topic: topic, partition: r.partition, key: r.key, value: r.value, timestampMs: r.timestampMs,
                                 headers: r.headers)
        }
    }
}
