import Foundation
public import KafkaClient
import Logging

// What a region's pipeline takes from records' Kafka metadata — offsets and timestamps, any
// 64-bit value a broker hands over — and how it says so when they are unusable
// (docs/events.md, "Record metadata").
extension RegionPipeline {
    /// The first record of each partition in `chunk` is that partition's oldest unapplied one:
    /// it makes the region's lag_seconds exact at once, while the database is down too, without
    /// waiting for the monitor to peek it. Reported with or without a timestamp: the moment it
    /// was read bounds the lag when its timestamp cannot (``ReplicationStatus``).
    func reportOldest(_ chunk: [KafkaRecord]) {
        var seen = Set<Int32>()
        for r in chunk where seen.insert(r.partition).inserted {
            status.oldestUnapplied(region: settings.region, partition: r.partition, offset: r.offset, timestampMs: r.timestampMs)
        }
    }

    /// The next offset to store per partition after `records` (each partition's last offset + 1)
    /// and the Kafka timestamp of its last record. Records with an offset no log holds (negative,
    /// `Int64.max`) never get here (``PartitionBookkeeping`` refuses them); should one, it is left out.
    public static func progress(of records: [KafkaRecord]) -> [PartitionProgress] {
        var byPartition: [Int32: PartitionProgress] = [:]
        for r in records {
            guard r.offset >= 0, r.offset < Int64.max else { continue }
            let next = r.offset + 1
            if let p = byPartition[r.partition], p.nextOffset >= next { continue }
            byPartition[r.partition] = PartitionProgress(partition: r.partition, nextOffset: next, lastRecordMs: r.timestampMs)
        }
        return byPartition.values.sorted { $0.partition < $1.partition }
    }

    /// Counts the committed records whose timestamps are after the commit or beyond year 9999
    /// (they applied; their timestamps serve as no age and are not stored), and warns if due.
    func noteTimestamps(_ chunk: [KafkaRecord], committedAtMs: Int64) {
        for r in chunk {
            guard let ms = r.timestampMs, ms > committedAtMs || KafkaTimestamp.storedMicroseconds(ms) == nil else { continue }
            metadataWarnings.unusableTimestamp(partition: r.partition, offset: r.offset, timestampMs: ms)
        }
        warnAboutMetadataIfDue()
    }

    /// One warning a minute at most, with the count since the last one and an example.
    func warnAboutMetadataIfDue() {
        let now = ContinuousClock.now
        guard metadataWarnings.hasNews, metadataWarnings.lastWarning.map({ now - $0 >= .seconds(60) }) ?? true else { return }
        let w = metadataWarnings
        metadataWarnings.reset(at: now)
        if w.timestamps > 0, let e = w.timestampExample {
            logger.warning("records with Kafka timestamps after now or beyond year 9999 (a producer in the wrong unit, or its clock ahead): applied; their timestamps serve as no age and are not stored", metadata: [
                "records": "\(w.timestamps)", "example_partition": "\(e.partition)", "example_offset": "\(e.offset)",
                "example_timestamp_ms": "\(e.timestampMs)"])
        }
        if w.offsets > 0, let e = w.offsetExample {
            logger.warning("records with an offset no Kafka log holds were not accepted", metadata: [
                "records": "\(w.offsets)", "example_partition": "\(e.partition)", "example_offset": "\(e.offset)"])
        }
    }
}

/// Counts of records with unusable metadata since the last warning, and an example of each.
struct MetadataWarnings {
    private(set) var timestamps = 0
    private(set) var timestampExample: (partition: Int32, offset: Int64, timestampMs: Int64)?
    private(set) var offsets = 0
    private(set) var offsetExample: (partition: Int32, offset: Int64)?
    private(set) var lastWarning: ContinuousClock.Instant?

    var hasNews: Bool { timestamps > 0 || offsets > 0 }

    mutating func unusableTimestamp(partition: Int32, offset: Int64, timestampMs: Int64) {
        timestamps += 1
        if timestampExample == nil { timestampExample = (partition, offset, timestampMs) }
    }

    mutating func unusableOffset(partition: Int32, offset: Int64) {
        offsets += 1
        if offsetExample == nil { offsetExample = (partition, offset) }
    }

    mutating func reset(at instant: ContinuousClock.Instant) {
        self = MetadataWarnings()
        lastWarning = instant
    }
}
