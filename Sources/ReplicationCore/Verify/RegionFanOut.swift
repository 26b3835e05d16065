import Foundation
import PostgresClient

/// One connection to every region's database, and a way to run the same work in every region
/// at once, one thread each (a comparison waits for the slowest region, not for their sum).
///
/// - Important: Blocking (libpq). Used by one thread at a time; the per-region threads it starts
///   each touch only their own connection.
final class RegionFanOut: @unchecked Sendable {
    let targets: [VerifyTarget]
    private let applicationName: String
    private var connections: [PostgresConnection?]
    /// Each region's bookkeeping tables, schema-qualified as its `search_path` resolved them
    /// when it connected (``Schema/check(_:table:)``, as the apply path names them).
    private(set) var bookkeeping: [BookkeepingTables]

    init(targets: [VerifyTarget], applicationName: String) {
        self.targets = targets
        self.applicationName = applicationName
        connections = Array(repeating: nil, count: targets.count)
        bookkeeping = Array(repeating: .unqualified, count: targets.count)
    }

    deinit { close() }

    var regions: [String] { targets.map(\.region) }
    var count: Int { targets.count }
    var isConnected: Bool { !connections.contains { $0 == nil } }

    func close() {
        for c in connections { c?.close() }
        connections = Array(repeating: nil, count: targets.count)
    }

    /// Connects to every region (or re-connects those lost), checks on each new connection that
    /// `table` and the bookkeeping tables exist, and resolves the bookkeeping tables' names there
    /// (once per connection, as the apply path does: a same-named table that appears earlier on
    /// the `search_path` later is never read).
    func connect(table: TableName) throws(VerifyError) {
        let existing = connections
        let name = applicationName
        let conns = try each { i, _ throws(PostgresError) -> PostgresConnection in
            if let c = existing[i], c.isOpen { return c }
            let c = try PostgresConnection(conninfo: self.targets[i].conninfo, applicationName: name,
                                           connectTimeoutSeconds: 5, queryTimeout: .seconds(600))
            try c.execute("SET jit = off; SET work_mem = '64MB'; SET TimeZone = 'UTC'")
            return c
        }
        for (i, c) in conns.enumerated() where existing[i] !== c {
            connections[i] = c
            let missing: [String], version: String?
            do {
                (missing, bookkeeping[i]) = try Schema.check(c, table: table)
                version = try Schema.versionProblem(c, table: table, region: targets[i].region)
            } catch {
                connections[i] = nil
                c.close()
                throw VerifyError(.regionUnavailable, "region \(targets[i].region): \(error)")
            }
            if !missing.isEmpty {
                connections[i] = nil
                c.close()
                throw VerifyError(.failed, "region \(targets[i].region) is not migrated (missing: \(missing.joined(separator: ", "))): run `region-replicator migrate --region \(targets[i].region)`")
            }
            if let version { throw VerifyError(.schemaVersion, "region \(targets[i].region): \(version)") }
        }
    }

    /// Runs `body` for every region at once, one thread each, with the region's index and its
    /// connection (nil only while connecting); the first error, in region order, names its region.
    func each<T: Sendable>(_ body: @escaping @Sendable (Int, PostgresConnection?) throws(PostgresError) -> T) throws(VerifyError) -> [T] {
        let results = LockedBox<[Int: Result<T, PostgresError>]>([:])
        let group = DispatchGroup()
        for i in 0..<count {
            let connection = connections[i]
            group.enter()
            let t = Thread {
                let r: Result<T, PostgresError>
                do throws(PostgresError) { r = .success(try body(i, connection)) } catch { r = .failure(error) }
                results.withLock { $0[i] = r }
                group.leave()
            }
            t.name = "verify-\(targets[i].region)"
            t.start()
        }
        group.wait()
        var out: [T] = []
        for i in 0..<count {
            switch results.withLock({ $0[i] })! {
            case .success(let v): out.append(v)
            case .failure(let e):
                let what = "region \(targets[i].region) (\(PostgresConnection.describe(targets[i].conninfo))): \(e)"
                throw VerifyError(e.isTransient ? .regionUnavailable : .failed, what)
            }
        }
        return out
    }

    /// ``each(_:)`` over open connections: a region whose connection was lost fails.
    func eachConnected<T: Sendable>(_ body: @escaping @Sendable (Int, PostgresConnection) throws(PostgresError) -> T) throws(VerifyError) -> [T] {
        try each { i, c throws(PostgresError) in
            guard let c, c.isOpen else { throw PostgresError(code: .connectionFailure, message: "connection lost") }
            return try body(i, c)
        }
    }

    /// Runs the statements `make` builds for each region (from its bookkeeping tables) as one
    /// pipeline in every region.
    func pipeline(_ make: (BookkeepingTables) -> [PostgresStatement]) throws(VerifyError) -> [[PostgresResult]] {
        let statements = bookkeeping.map(make)
        return try eachConnected { i, c throws(PostgresError) in try c.pipeline(statements[i]) }
    }
}
