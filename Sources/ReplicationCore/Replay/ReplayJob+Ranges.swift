import KafkaClient

// Range resolution: turns the request's bounds (offsets or times) into one offset range per
// partition, with a timestamp filter where the broker cannot resolve a time to an offset.
extension ReplayJob {
    func resolveRanges(_ consumer: KafkaConsumer, summary: inout ReplaySummary,
                       notice: (String) -> Void) throws(ReplayError) -> [ReplayPartitionRange] {
        let topic = request.topic
        let count: Int
        do {
            count = try consumer.partitionCount(topic: topic, timeoutMs: Self.metadataTimeoutMs)
        } catch {
            throw ReplayError(.kafkaUnavailable, "Kafka (\(topic)): \(error)")
        }
        var partitions = (0..<Int32(count)).map { $0 }
        if let p = request.partition {
            guard p >= 0, Int(p) < count else {
                throw ReplayError(.usage, "--partition \(p): topic \(topic) has partitions 0…\(count - 1)")
            }
            partitions = [p]
        }
        var ranges: [ReplayPartitionRange] = []
        var fromFallback: [Int32] = []
        var toFallback: [Int32] = []
        for p in partitions {
            let marks: (low: Int64, high: Int64)
            do {
                marks = try consumer.queryWatermarks(topic: topic, partition: p, timeoutMs: Self.metadataTimeoutMs)
            } catch {
                throw ReplayError(.kafkaUnavailable, "Kafka (\(topic)[\(p)]): \(error)")
            }
            // librdkafka reads a negative offset as a position (-1 the end, -2 the beginning):
            // watermarks outside 0 … high are no range to read.
            guard marks.low >= 0, marks.high >= marks.low else {
                throw ReplayError(.kafkaUnavailable, "Kafka (\(topic)[\(p)]): the broker reports watermarks \(marks.low)…\(marks.high)")
            }
            var range = ReplayPartitionRange(partition: p, start: marks.low, end: marks.high)
            switch request.from {
            case .offset(let n):
                if n < marks.low {
                    summary.notes.append("partition \(p): offsets below \(marks.low) are no longer in the topic (retention); starting at \(marks.low)")
                }
                range.start = max(n, marks.low)
            case .time(let t):
                if let o = offsetForTime(consumer, p, t), o >= 0 {
                    range.start = max(o, marks.low)
                } else if marks.high > marks.low {
                    range.skipBeforeMs = t.microseconds / 1000
                    fromFallback.append(p)
                }
            }
            switch request.to {
            case nil:
                break
            case .offset(let n):
                range.end = min(n, marks.high)
            case .time(let t):
                if let o = offsetForTime(consumer, p, t), o >= 0 {
                    range.end = min(o, marks.high)
                } else if marks.high > marks.low {
                    range.skipFromMs = t.microseconds / 1000
                    toFallback.append(p)
                }
            }
            range.end = max(range.end, range.start)
            ranges.append(range)
        }
        summary.fallbackPartitions = Array(Set(fromFallback + toFallback)).sorted()
        if !fromFallback.isEmpty {
            let text = "fallback: the broker did not resolve --from-time through offsets-for-times for partitions \(fromFallback); reading them from the start and skipping records older than --from-time by their timestamp"
            summary.notes.append(text)
            notice(text)
        }
        if !toFallback.isEmpty {
            let text = "fallback: the broker did not resolve --to-time through offsets-for-times for partitions \(toFallback); reading them to the high watermark and skipping records at or after --to-time by their timestamp"
            summary.notes.append(text)
            notice(text)
        }
        return ranges
    }

    /// The first offset with a timestamp ≥ `t` (nil when the broker cannot say).
    private func offsetForTime(_ consumer: KafkaConsumer, _ p: Int32, _ t: Timestamp) -> Int64? {
        let q = [TopicPartitionOffset(topic: request.topic, partition: p, offset: t.microseconds / 1000)]
        guard let answer = try? consumer.offsetsForTimes(q, timeoutMs: Self.metadataTimeoutMs).first else { return nil }
        return answer.offset
    }
}
