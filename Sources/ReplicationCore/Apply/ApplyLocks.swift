import Foundation

/// The advisory locks a transaction that writes rows takes first, after the table's key
/// (docs/design.md, "Locks"): a pure value, computed from what the transaction writes — never
/// from the Kafka partition a record came through, so every writer (each pipeline, `replay`,
/// `dead-letters retry`, another instance reading a differently keyed copy) derives the same
/// keys for the same session and message.
///
/// - **Row buckets** (``Space/rows``): ``bucketCount`` buckets of a hash of a session id
///   (``bucket(session:)``) or of a message id (``bucket(message:)``). An upsert takes its
///   session's and its message's buckets *shared*; a message tombstone takes its message's bucket
///   and a session erasure its session's bucket *exclusively*. So a deletion and an upsert of
///   the same message or session never commit concurrently (each would miss the other's
///   uncommitted row), while upserts — whose races the version guard in `ON CONFLICT … WHERE`
///   decides — never wait for each other.
/// - **Offsets** (``Space/offsets``): one exclusive key per partition whose stored offset the
///   transaction checks or writes, so two instances that both believe they own a partition
///   (a rebalance) serialise and each sees the other's stored offset.
///
/// - **Partition keys of earlier releases** (``Space/legacyPartitions``): one exclusive key per
///   partition the transaction's records came through or whose offset it checks or stores —
///   the key builds before bucket locks took, `(hashtext('region-replicator apply ' || table as
///   configured), partition)`. An older instance still running during a rolling upgrade takes
///   only those, so a writer of this version takes them too: the two exclude each other on
///   every partition they share, as two older writers did (docs/operations.md, "Upgrades").
///
/// ``sorted`` orders the keys by space, then number: every writer takes its keys in that one
/// order, so no two writers wait on each other in a cycle.
struct ApplyLocks: Sendable, Hashable {
    /// The number of row buckets: a bound on the locks one transaction holds (at most this
    /// many row keys, however large the batch).
    static let bucketCount: UInt64 = 1024

    enum Space: Int32, Sendable, Hashable, Comparable, CaseIterable {
        /// First: an older writer takes these keys alone, in ascending partition order.
        case legacyPartitions = -1
        case offsets = 0
        case rows = 1
        static func < (a: Space, b: Space) -> Bool { a.rawValue < b.rawValue }
    }

    struct Key: Sendable, Hashable, Comparable {
        var space: Space
        var number: Int32
        static func < (a: Key, b: Key) -> Bool { (a.space, a.number) < (b.space, b.number) }
    }

    /// Each key, and whether it is taken exclusively.
    private(set) var modes: [Key: Bool] = [:]

    init() {}

    /// The locks of a transaction applying `plan`, whose records came through `recordPartitions`,
    /// and checking or storing the offsets of `partitions`.
    init(plan: ApplyPlan, partitions: some Sequence<Int32>, recordPartitions: some Sequence<Int32> = [Int32]()) {
        for p in partitions {
            take(Key(space: .legacyPartitions, number: p), exclusive: true)
            take(Key(space: .offsets, number: p), exclusive: true)
        }
        for p in recordPartitions { take(Key(space: .legacyPartitions, number: p), exclusive: true) }
        for u in plan.upserts { shareRows(of: u) }
        for round in plan.tieRounds { for t in round { shareRows(of: t.upsert) } }
        for d in plan.messageTombstones { take(Key(space: .rows, number: Self.bucket(message: d.messageID)), exclusive: true) }
        for s in plan.sessionTombstones { take(Key(space: .rows, number: Self.bucket(session: s.sessionID)), exclusive: true) }
    }

    private mutating func shareRows(of u: MessageUpsert) {
        take(Key(space: .rows, number: Self.bucket(session: u.sessionID)), exclusive: false)
        take(Key(space: .rows, number: Self.bucket(message: u.messageID)), exclusive: false)
    }

    /// Adds `key`; exclusive wins over shared (one key is never taken twice in two modes).
    mutating func take(_ key: Key, exclusive: Bool) {
        modes[key] = (modes[key] ?? false) || exclusive
    }

    /// The keys in the order every writer takes them.
    var sorted: [(key: Key, exclusive: Bool)] {
        modes.keys.sorted().map { ($0, modes[$0]!) }
    }

    var isEmpty: Bool { modes.isEmpty }

    // MARK: - The buckets

    /// The bucket of a session id: FNV-1a (64 bits) of the byte `s` followed by the id's UTF-8
    /// bytes, modulo ``bucketCount``. Stable: any writer of any version that shares these
    /// locks must compute exactly this.
    static func bucket(session: String) -> Int32 {
        bucket(fnv1a(tag: UInt8(ascii: "s"), session.utf8))
    }

    /// The bucket of a message id: FNV-1a (64 bits) of the byte `m` followed by the id's 16
    /// bytes (RFC 4122 order), modulo ``bucketCount``.
    static func bucket(message: UUID) -> Int32 {
        let u = message.uuid
        let bytes = [u.0, u.1, u.2, u.3, u.4, u.5, u.6, u.7, u.8, u.9, u.10, u.11, u.12, u.13, u.14, u.15]
        return bucket(fnv1a(tag: UInt8(ascii: "m"), bytes))
    }

    private static func bucket(_ hash: UInt64) -> Int32 {
        Int32(hash % bucketCount)  // < 1024: always fits
    }

    /// FNV-1a (64 bits) of the byte `tag` followed by `bytes`.
    static func fnv1a(tag: UInt8, _ bytes: some Sequence<UInt8>) -> UInt64 {
        var h = FNV1a()
        h.add(CollectionOfOne(tag))
        h.add(bytes)
        return h.value
    }
}
