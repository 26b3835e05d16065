import Foundation
import KafkaClient

/// The reference model of the apply rules (docs/events.md) applied to exactly the records a region has committed,
/// for checking that a batch is never half-applied: after any stop, a region's rows must equal
/// the model over the records below its stored next offsets, partition by partition.
///
/// The records are read back from the topic (their partitions and offsets are only known
/// there); their values are the `Workload` events, so the rules are those of
/// ``Workload/expectedRows(in:applyToOrigin:)``, restated over decoded events.
enum AppliedPrefixModel {
    struct Record {
        let partition: Int32
        let offset: Int64
        let event: [String: Any]
    }

    /// Every record of the cluster's topic, read with a group-less consumer.
    static func readTopic(_ cluster: TestCluster, timeout: Duration = .seconds(60)) throws -> [Record] {
        let high = try cluster.highWatermarks()
        let consumer = try KafkaConsumer(configuration: KafkaConfiguration([
            ("bootstrap.servers", cluster.bootstrap), ("log_level", "3")]), groupID: nil)
        defer { consumer.close() }
        try consumer.assign((0..<Int32(cluster.partitions)).map {
            TopicPartitionOffset(topic: cluster.topic, partition: $0, offset: TopicPartitionOffset.beginning)
        })
        var records: [Record] = []
        var next: [Int32: Int64] = [:]
        try waitUntil("reading back \(high.values.reduce(0, +)) records of \(cluster.topic)", timeout: timeout, interval: .zero) {
            if case .record(let r)? = consumer.poll(timeoutMs: 100) {
                let value = r.value.flatMap { try? JSONSerialization.jsonObject(with: Data($0)) as? [String: Any] } ?? [:]
                records.append(Record(partition: r.partition, offset: r.offset, event: value))
                next[r.partition] = r.offset + 1
            }
            return high.allSatisfy { p, h in (next[p] ?? 0) >= h }
        }
        return records
    }

    /// The rows `target` must hold having applied exactly the records below `nextOffsets`.
    static func expectedRows(_ records: [Record], below nextOffsets: [Int32: Int64], in target: String) -> [Workload.Row] {
        var best: [String: Workload.Row] = [:]
        var messageTombstones: [String: Int] = [:]
        var sessionTombstones: [String: String] = [:]
        for r in records where r.offset < (nextOffsets[r.partition] ?? 0) {
            let e = r.event
            switch e["type"] as? String {
            case nil:  // seed-style: the article's producer
                guard let session = e["session_id"] as? String, let role = e["role"] as? String,
                      let content = e["content"] as? String, let origin = e["region"] as? String,
                      let created = e["created_at"] as? String, origin != target else { continue }
                let key = "seed|\(session)|\(origin)|\(created)|\(role)|\(content)"
                best[key] = Workload.Row(messageID: "seed", sessionID: session, role: role, content: content,
                                         region: origin, createdAt: created, version: 1)
            case "message.upserted":
                guard let id = e["message_id"] as? String, let session = e["session_id"] as? String,
                      let role = e["role"] as? String, let content = e["content"] as? String,
                      let origin = e["origin_region"] as? String, let created = e["created_at"] as? String,
                      let version = e["version"] as? Int, origin != target else { continue }
                if let b = best[id], b.version >= version { continue }
                best[id] = Workload.Row(messageID: id, sessionID: session, role: role, content: content, region: origin,
                                        createdAt: utc(created), version: version)
            case "message.deleted":
                guard let id = e["message_id"] as? String, let version = e["version"] as? Int else { continue }
                messageTombstones[id] = max(messageTombstones[id] ?? 0, version)
            case "session.deleted":
                guard let session = e["session_id"] as? String, let at = e["occurred_at"] as? String else { continue }
                sessionTombstones[session] = max(sessionTombstones[session] ?? "", utc(at))
            default:
                continue
            }
        }
        return best.compactMap { key, row -> Workload.Row? in
            if let t = messageTombstones[key], row.version <= t { return nil }
            if let s = sessionTombstones[row.sessionID], row.createdAt <= s { return nil }
            return row
        }.sorted()
    }

    /// The UTC text (`2026-…T…:…:….uuuuuu`) of a timestamp in one of `Workload`'s RFC 3339 forms.
    static func utc(_ text: String) -> String {
        if text.hasSuffix("Z") { return String(text.dropLast()) }
        if text.hasSuffix("+00:00") { return String(text.dropLast(6)) }
        if text.hasSuffix("+02:00") { return Workload.utcText(Workload.micros(String(text.dropLast(6))) - 7_200_000_000) }
        return text
    }
}
