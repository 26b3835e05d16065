internal import CLibPQ

/// The rows of a result, as text (the text result format).
public struct PostgresResult: Sendable {
    public var columns: [String]
    public var rows: [[String?]]
    /// Rows affected by INSERT/UPDATE/DELETE (0 when not applicable).
    public var affectedRows: Int

    static let empty = PostgresResult(columns: [], rows: [], affectedRows: 0)

    init(columns: [String], rows: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
    }

    init(_ r: OpaquePointer) {
        let nf = PQnfields(r)
        let nt = PQntuples(r)
        columns = (0..<nf).map { String(cString: PQfname(r, $0)) }
        var rows: [[String?]] = []
        rows.reserveCapacity(Int(nt))
        for t in 0..<nt {
            rows.append((0..<nf).map { f in
                PQgetisnull(r, t, f) == 1 ? nil : String(cString: PQgetvalue(r, t, f))
            })
        }
        self.rows = rows
        affectedRows = Int(String(cString: PQcmdTuples(r))) ?? 0
    }
}

/// One row of a ``PostgresResult``, read by column name, so that code never depends on the
/// position of a column in SQL written elsewhere.
public struct PostgresRow: Sendable {
    public let columns: [String]
    public let values: [String?]

    /// The text of column `name`: nil when the value is NULL or the result has no such column.
    public subscript(_ name: String) -> String? {
        guard let i = columns.firstIndex(of: name), i < values.count else { return nil }
        return values[i]
    }

    /// Column `name` as an integer: nil when NULL, absent, or not an integer that fits (a reply
    /// is input like any other: never trust its range).
    public func integer<T: FixedWidthInteger>(_ name: String, as type: T.Type = Int.self) -> T? {
        self[name].flatMap { T($0) }
    }
}

extension PostgresResult {
    /// The rows, each readable by column name.
    public var namedRows: [PostgresRow] { rows.map { PostgresRow(columns: columns, values: $0) } }
}
