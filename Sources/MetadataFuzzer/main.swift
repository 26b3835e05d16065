// A libFuzzer target over what the daemon does with records' Kafka *metadata* (`scripts/fuzz`),
// beside `DecoderFuzzer`, which sees only record values; in an ordinary build a replay tool.
//
// Each input is a script: its bytes choose a sequence of steps a region's pipeline and lag
// monitor go through — partitions assigned, revoked and positioned at stored offsets (any
// Int64, negative ones included), records polled with arbitrary partitions, offsets, timestamps
// and keys, low watermarks, batches turned into progress and into the apply transaction's
// statements, watermark samples and stored offsets from outside, the oldest unapplied records
// read — and after every step the lag figures are checked. Nothing may trap; the figures must
// be finite and never negative; a region behind whose oldest unapplied record was read must not
// read a lag below the time since it was read (docs/events.md, "Record metadata").
import Foundation
import KafkaClient
@_spi(Fuzzing) import ReplicationCore

/// The input as a stream of choices (0 once exhausted).
struct Script {
    let bytes: [UInt8]
    var i = 0
    var atEnd: Bool { i >= bytes.count }

    mutating func byte() -> UInt8 {
        guard i < bytes.count else { return 0 }
        defer { i += 1 }
        return bytes[i]
    }

    mutating func raw64() -> Int64 {
        var v: UInt64 = 0
        for _ in 0..<8 { v = v << 8 | UInt64(byte()) }
        return Int64(bitPattern: v)
    }

    /// An Int64 biased to the edges hostile metadata hits, and to small values near `near`.
    mutating func int64(near: Int64) -> Int64 {
        switch byte() % 12 {
        case 0: return .max
        case 1: return .min
        case 2: return 0
        case 3: return -1
        case 4: return 1 << 62
        case 5: return near.saturatingMultiplied(by: 1_000_000)  // nanoseconds for milliseconds
        case 6: return near.saturatingMultiplied(by: 1_000)
        case 7, 8, 9: return near.saturatingAdding(Int64(byte()) - 128)
        case 10: return .max - Int64(byte())
        default: return raw64()
        }
    }

    mutating func partition() -> Int32 { byte() % 8 == 7 ? Int32(truncatingIfNeeded: raw64()) : Int32(byte() % 4) }
}

let event = Array(#"{"type":"message.upserted","event_id":"e","message_id":"5f7e9c52-1b2c-4d3e-8f40-123456789abc","session_id":"s","role":"user","content":"c","origin_region":"o","created_at":"2026-11-24T10:00:00.123456789Z","version":1}"#.utf8)

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var s = Script(bytes: data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    var book = PartitionBookkeeping()
    let status = ReplicationStatus(topic: "t", regions: ["r"])
    let applier = RegionApplier(region: "r", table: try! TableName(validating: "messages"), applyToOrigin: false)
    var clockMs: Int64 = 1_800_000_000_000
    var nextOffset: [Int32: Int64] = [:]
    for _ in 0..<200 where !s.atEnd {
        clockMs += Int64(s.byte())
        let now = Double(clockMs) / 1000
        switch s.byte() % 9 {
        case 0:
            _ = book.assigned((0..<Int(s.byte() % 4 + 1)).map { _ in s.partition() })
        case 1:
            book.revoked([s.partition()])
        case 2:
            let stored = Dictionary((0..<Int(s.byte() % 4)).map { _ in (s.partition(), s.int64(near: 100)) }, uniquingKeysWith: { a, _ in a })
            _ = book.positionsResolved(stored: stored)
            if s.byte() % 2 == 0 { _ = book.storedOffsetsMoved(stored: stored) }
            status.storedOffsets(region: "r", stored, problem: nil)
        case 3:
            var records: [KafkaRecord] = []
            for _ in 0..<Int(s.byte() % 8 + 1) {
                let p = s.partition()
                let offset = s.byte() % 4 == 0 ? s.int64(near: 0) : (nextOffset[p] ?? 0).saturatingAdding(Int64(s.byte() % 3))
                if offset >= 0, offset < .max { nextOffset[p] = offset + 1 }
                let key: [UInt8]? = s.byte() % 3 == 0 ? nil : [UInt8](repeating: s.byte(), count: Int(s.byte()))
                let ts: Int64? = s.byte() % 5 == 0 ? nil : s.int64(near: clockMs)
                records.append(KafkaRecord(topic: "t", partition: p, offset: offset, key: key,
                                           value: s.byte() % 4 == 0 ? [s.byte()] : event, timestampMs: ts))
            }
            for action in book.polled(records) {
                if case .queryLowWatermark(let p) = action { _ = book.lowWatermark(partition: p, s.int64(near: nextOffset[p] ?? 0)) }
            }
        case 4:
            let chunk = Array(book.pending.prefix(Int(s.byte() % 16 + 1)))
            guard !chunk.isEmpty else { break }
            let progress = RegionPipeline.progress(of: chunk)
            for p in progress { precondition(p.nextOffset >= 1, "next offset \(p.nextOffset) stored for partition \(p.partition)") }
            let decoded = chunk.map { DecodedRecord(record: $0, event: EventDecoder.decode($0.value)) }
            let statements = applier.statements(decoded, progress: progress, expectedOffsets: book.expectedStored(for: progress.map(\.partition)),
                                                consumerGroup: "g", topic: "t")
            precondition(statements.count >= 3)
            status.oldestUnapplied(region: "r", partition: chunk[0].partition, offset: chunk[0].offset, timestampMs: chunk[0].timestampMs, at: now)
            if s.byte() % 4 == 0 {
                _ = book.applyFailed()
            } else {
                _ = book.applySucceeded(count: chunk.count, progress: progress)
                status.committed(region: "r", progress: progress, at: now)
                for r in chunk {
                    if let ns = KafkaTimestamp.latencyNanoseconds(r.timestampMs, committedAtMs: clockMs) { precondition(ns >= 0) }
                }
            }
        case 5:
            let high = Dictionary((0..<Int(s.byte() % 4 + 1)).map { _ in (s.partition(), s.int64(near: 100)) }, uniquingKeysWith: { a, _ in a })
            let low = high.mapValues { _ in s.int64(near: 0) }
            status.watermarks(region: "r", high, low: low, at: now)
        case 6:
            status.oldestUnapplied(region: "r", partition: s.partition(), offset: s.int64(near: 100), timestampMs: s.int64(near: clockMs), at: now)
        case 7:
            _ = book.retryEnded()
            book.abandonPending()
        default:
            // What `last_record_at` stores: an instant from 1970 to year 9999, or nothing.
            if let us = KafkaTimestamp.storedMicroseconds(s.int64(near: clockMs)) { precondition(us >= 0 && us <= 253_402_300_799_999_000) }
        }
        check(status, book, nowMs: clockMs)
    }
    return 0
}

/// The invariants after every step.
func check(_ status: ReplicationStatus, _ book: PartitionBookkeeping, nowMs: Int64) {
    var last: [Int32: Int64] = [:]
    for r in book.pending {
        precondition(r.offset >= 0 && r.offset < .max, "pending record at offset \(r.offset)")
        if let l = last[r.partition] { precondition(r.offset > l, "pending offsets of \(r.partition) not rising") }
        last[r.partition] = r.offset
    }
    let now = Double(nowMs) / 1000
    let region = status.snapshot(now: now).regions[0]
    precondition(region.lagEvents >= 0 && region.expiredEvents >= 0)
    precondition(region.lagSeconds.isFinite && region.lagSeconds >= 0, "lag_seconds \(region.lagSeconds)")
    precondition(region.replicatedThrough.isFinite)
    // A lagging partition whose oldest unapplied record was read at `seen`: its age is at least
    // now − seen, whatever its timestamp says.
    let oldest = status.oldestRead(region: "r")
    for p in region.partitions where p.lagEvents > 0 {
        guard let o = oldest[p.partition], o.offset == p.nextOffset, o.seenMs <= nowMs else { continue }
        precondition(region.lagSeconds >= Double(nowMs - o.seenMs) / 1000 - 0.002,
                     "lag_seconds \(region.lagSeconds) below the \(Double(nowMs - o.seenMs) / 1000) s since partition \(p.partition)'s oldest record was read (timestamp \(o.timestampMs.map(String.init) ?? "none"))")
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
#else
// Replay: `MetadataFuzzer FILE|DIR...` runs each input's script; `MetadataFuzzer --random N`
// runs N pseudo-random scripts (a smoke run without the sanitizer).
var files: [String] = []
var arguments = Array(CommandLine.arguments.dropFirst())
if arguments.first == "--random", arguments.count == 2, let n = Int(arguments[1]) {
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    for _ in 0..<n {
        let bytes = (0..<512).map { _ -> UInt8 in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407  // a PRNG, not arithmetic on input
            return UInt8(truncatingIfNeeded: state >> 56)
        }
        _ = bytes.withUnsafeBufferPointer { fuzzOneInput($0.baseAddress, $0.count) }
    }
    print("\(n) random scripts: ok")
    exit(0)
}
for argument in arguments {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory), isDirectory.boolValue {
        files += ((try? FileManager.default.contentsOfDirectory(atPath: argument)) ?? []).sorted().map { argument + "/" + $0 }
    } else {
        files.append(argument)
    }
}
if files.isEmpty {
    FileHandle.standardError.write(Data("usage: MetadataFuzzer FILE|DIR... | --random N (build with scripts/fuzz to fuzz)\n".utf8))
    exit(64)
}
for path in files {
    guard let data = FileManager.default.contents(atPath: path) else {
        FileHandle.standardError.write(Data("cannot read \(path)\n".utf8))
        exit(66)
    }
    _ = data.withUnsafeBytes { fuzzOneInput($0.bindMemory(to: UInt8.self).baseAddress, data.count) }
    print("\(path): ok")
}
#endif
