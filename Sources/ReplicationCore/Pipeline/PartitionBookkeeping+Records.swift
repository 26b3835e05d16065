public import KafkaClient

/// What the consumer delivers (records, ends of partitions), gaps in it, and seeks librdkafka
/// refused.
extension PartitionBookkeeping {
    // MARK: - Records

    /// Records arrived from the consumer, then the ends of partitions it reached (each the
    /// offset its fetch will continue at; only with `enable.partition.eof`). Returns what to do
    /// about gaps.
    public mutating func polled(_ records: some Sequence<KafkaRecord>, ends: [TopicPartitionOffset] = []) -> [BookkeepingAction] {
        var actions: [BookkeepingAction] = []
        for r in records {
            let p = r.partition
            guard !paused.contains(p), var part = partitions[p], !part.unpositioned else { continue }  // re-read after a seek
            // No log holds a negative offset, and after Int64.max there is no next one to store.
            guard r.offset >= 0, r.offset < Int64.max else {
                actions.append(.unusableOffset(partition: p, offset: r.offset))
                continue
            }
            guard case .at(let expected) = part.accept else { continue }  // not positioned yet
            if r.offset < expected { continue }  // already accepted or applied
            if r.offset > expected {
                guard firstAfter(expected, at: r.offset, end: false, in: &part, p, &actions) else {
                    partitions[p] = part
                    continue
                }
            }
            part.gap = nil
            part.endsAt = nil
            part.accept = .at(r.offset + 1)
            partitions[p] = part
            pending.append(r)
            pendingBytes += (r.key?.count ?? 0) + (r.value?.count ?? 0)
        }
        for e in ends {
            let p = e.partition
            guard !paused.contains(p), var part = partitions[p], !part.unpositioned,
                  case .at(let expected) = part.accept, e.offset > expected else { continue }
            // The fetch went past the next offset without delivering a record: markers, or a
            // gap. Proven empty only like any other gap.
            if firstAfter(expected, at: e.offset, end: true, in: &part, p, &actions) {
                part.gap = nil
                part.accept = .at(e.offset)
                part.endsAt = e.offset
            }
            partitions[p] = part
        }
        return actions
    }

    /// The fetch of `p` delivered `offset` (a record, or its `end`) first after `expected`.
    /// - Returns: true when that proves `expected..<offset` holds no record the broker serves:
    ///   the partition was sought to `expected` again after the low watermark did not explain
    ///   the gap, and the fresh fetch came to the same offset (`noRecords` is reported).
    ///   Otherwise the gap is opened (seek back, ask for the low watermark), or, when the fresh
    ///   fetch came to another offset and an end of the partition is involved (more records or
    ///   markers were written meanwhile), opened again from there.
    private func firstAfter(_ expected: Int64, at offset: Int64, end: Bool, in part: inout Partition, _ p: Int32,
                            _ actions: inout [BookkeepingAction]) -> Bool {
        if let gap = part.gap, gap.expected == expected {
            guard gap.resought else { return false }  // still sorting it out
            if offset == gap.seen {
                actions.append(.noRecords(partition: p, from: expected, to: offset))
                return true
            }
            guard end || gap.seenEnd else { return false }  // a record fetched before the seek
        }
        part.gap = Gap(expected: expected, seen: offset, seenEnd: end)
        part.unpositioned = false
        actions += [.seek(partition: p, to: .offset(expected)), .queryLowWatermark(partition: p)]
        return false
    }

    // MARK: - Low watermarks

    /// The broker's low watermark of `partition`, asked for by ``BookkeepingAction/queryLowWatermark(partition:)``.
    public mutating func lowWatermark(partition p: Int32, _ low: Int64) -> [BookkeepingAction] {
        guard var part = partitions[p] else { return [] }
        if part.accept == .beginning {
            // The region stores nothing for the partition: it starts at its first record now.
            part.accept = .at(low)
            partitions[p] = part
            if retrying { return [] }  // paused until the retried batch applies (resumeAt seeks it)
            var actions = [seek(p, to: low)]
            if paused.remove(p) != nil { actions.append(.resume([p])) }
            return actions
        }
        guard var gap = part.gap, part.accept == .at(gap.expected) else { return [] }
        if low > gap.expected {
            part.gap = nil
            part.accept = .at(low)
            partitions[p] = part
            var actions: [BookkeepingAction] = [.gone(partition: p, from: gap.expected, to: low)]
            if !paused.contains(p) { actions.append(seek(p, to: low)) }
            return actions
        }
        gap.resought = true
        part.gap = gap
        partitions[p] = part
        return paused.contains(p) ? [] : [seek(p, to: gap.expected)]
    }

    /// The low watermark could not be read. For a gap: forget it (the next record past the
    /// partition's next offset reports it again) and re-read from the next offset. For a
    /// partition starting at its beginning: ask again in ``retryPositioning()``.
    public mutating func lowWatermarkUnavailable(partition p: Int32) -> [BookkeepingAction] {
        guard var part = partitions[p] else { return [] }
        if part.accept == .beginning {
            part.unpositioned = true
            partitions[p] = part
            return []
        }
        guard let gap = part.gap else { return [] }
        part.gap = nil
        partitions[p] = part
        return paused.contains(p) ? [] : [seek(p, to: gap.expected)]
    }

    // MARK: - Refused seeks

    /// librdkafka refused the last seek of `partition` (not started yet, being revoked,
    /// unknown): its fetch position is unknown, so nothing it delivers is taken until
    /// ``retryPositioning()`` has sought it again and librdkafka took that seek.
    public mutating func seekFailed(partition p: Int32) {
        partitions[p]?.unpositioned = true
    }

    /// Seeks every partition whose seek was refused again, to where it must continue now (the
    /// start of its open gap, or its next offset), and asks again for the low watermarks that
    /// could not be read. Call it after a pause (a timer): librdkafka takes a seek once the
    /// partition's fetcher runs.
    public mutating func retryPositioning() -> [BookkeepingAction] {
        var actions: [BookkeepingAction] = []
        for (p, part) in partitions.sorted(by: { $0.key < $1.key }) where part.unpositioned {
            if let gap = part.gap {
                actions.append(seek(p, to: gap.expected))
                continue
            }
            switch part.accept {
            case .unresolved: partitions[p]?.unpositioned = false  // positionsResolved seeks it
            case .beginning:
                partitions[p]?.unpositioned = false
                actions.append(.queryLowWatermark(partition: p))
            case .at(let n): actions.append(seek(p, to: n))
            }
        }
        return actions
    }
}
