import Foundation
import Testing

/// The classification a `replay` run printed in its summary line.
struct ReplayCounts: Equatable, CustomStringConvertible {
    var read = 0
    var applied = 0
    var duplicate = 0
    var stale = 0
    var skippedOrigin = 0
    var deadLettered = 0
    var dryRun = false

    var total: Int { applied + duplicate + stale + skippedOrigin + deadLettered }
    var classification: [Int] { [read, applied, duplicate, stale, skippedOrigin, deadLettered] }
    var description: String {
        "read \(read): applied \(applied), duplicate \(duplicate), stale \(stale), skipped-origin \(skippedOrigin), dead-lettered \(deadLettered)\(dryRun ? " (dry run)" : "")"
    }

    /// Parses the last `replay <region>: read N records: …` line of `output`.
    init?(output: String, region: String) {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("replay \(region): read ") }) else { return nil }
        let numbers = line.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        // The region name may contain digits ("eu-west-1"): take the last six numbers.
        guard numbers.count >= 6 else { return nil }
        let n = Array(numbers.suffix(6))
        read = n[0]; applied = n[1]; duplicate = n[2]; stale = n[3]; skippedOrigin = n[4]; deadLettered = n[5]
        dryRun = line.hasSuffix("(dry run)")
    }
}

extension Harness {
    /// Runs `region-replicator replay --config <this harness's config> <arguments>`.
    func replay(_ arguments: [String], configPath: String? = nil, timeout: Duration = .seconds(300)) throws -> (status: Int32, output: String) {
        try runReplicator(["replay", "--config", configPath ?? self.configPath] + arguments, timeout: timeout)
    }

    /// Runs `region-replicator dead-letters <arguments> --config <this harness's config>`.
    func deadLetters(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runReplicator(["dead-letters"] + arguments + ["--config", configPath])
    }

    /// Every column of `messages` (replicated_at included), for before/after comparisons.
    func fullRows(_ region: String) throws -> [[String?]] {
        try dbs.query(region, "SELECT message_id::text, session_id, role, content, region, created_at::text, version, replicated_at::text, xmin::text FROM messages ORDER BY message_id")
    }

    /// Offsets, tombstones and dead letters of `region`, for "wrote nothing" checks.
    func bookkeeping(_ region: String) throws -> [[String?]] {
        try dbs.query(region, "SELECT 'o', consumer_group || partition::text, next_offset::text, updated_at::text FROM replicator_offsets")
            + dbs.query(region, "SELECT 'mt', message_id::text, version::text, deleted_at::text FROM replicator_message_tombstones")
            + dbs.query(region, "SELECT 'st', session_id, deleted_at::text, '' FROM replicator_session_tombstones")
            + dbs.query(region, "SELECT 'dl', id::text, error, retried_at::text FROM replicator_dead_letters")
    }

    /// A copy of this harness's configuration without `region` (for a daemon that does not know it).
    func configWithout(_ region: String) throws -> String {
        let text = try String(contentsOfFile: configPath, encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if let i = lines.firstIndex(of: "  - name: \(region)") { lines.removeSubrange(i...(i + 1)) }
        let path = dir + "/config-without-\(region).yaml"
        try lines.joined(separator: "\n").write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Σ high watermarks: the number of records in the topic.
    func recordCount() throws -> Int {
        Int(try cluster.highWatermarks().values.reduce(0, +))
    }
}

/// A `message.upserted` event as JSON bytes.
func upsertEvent(id: String, session: String, content: String, origin: String, version: Int = 1,
                 createdAt: String = "2026-11-24T10:00:00Z") -> [UInt8] {
    let json: [String: Any] = ["type": "message.upserted", "event_id": UUID().uuidString, "message_id": id,
                               "session_id": session, "role": "user", "content": content, "origin_region": origin,
                               "created_at": createdAt, "version": version]
    return Array(try! JSONSerialization.data(withJSONObject: json, options: [.sortedKeys]))
}
