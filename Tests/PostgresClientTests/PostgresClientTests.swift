import Foundation
import PostgresClient
import Testing

/// The libpq wrapper on its own, against the throw-away Postgres servers that `scripts/test`
/// starts on loopback (`RR_TEST_PG_PORTS`); the first one is enough.
@Suite("PostgresClient", .timeLimit(.minutes(2)))
struct PostgresClientTests {
    static func port() throws -> Int {
        let ports = (ProcessInfo.processInfo.environment["RR_TEST_PG_PORTS"] ?? "").split(separator: ",").compactMap { Int($0) }
        guard let first = ports.first else {
            throw SetupError(description: "these tests need a Postgres server: run them with `bash scripts/test` (RR_TEST_PG_PORTS is not set)")
        }
        return first
    }

    static func connect() throws -> PostgresConnection {
        try PostgresConnection(conninfo: "host=127.0.0.1 port=\(try port()) dbname=postgres user=postgres",
                               applicationName: "PostgresClientTests")
    }

    struct SetupError: Error, CustomStringConvertible { let description: String }

    @Test func textParametersBindWithNullsAndQuotes() throws {
        let db = try Self.connect()
        defer { db.close() }
        let r = try db.query("SELECT $1::text AS a, $2::int8 + 1 AS b, $3::text IS NULL AS c", ["it's \"quoted\"\t", "41", nil])
        #expect(r.columns == ["a", "b", "c"])
        #expect(r.rows == [["it's \"quoted\"\t", "42", "t"]])
    }

    @Test func binaryArraysArriveAsTyped() throws {
        let db = try Self.connect()
        defer { db.close() }
        var ints = PostgresBinaryArray(.int8)
        ints.append(int8: 1)
        ints.appendNull()
        ints.append(int8: -3)
        var texts = PostgresBinaryArray(.text)
        texts.append(text: "héllo")
        texts.append(text: "")
        var uuids = PostgresBinaryArray(.uuid)
        let u = UUID(uuidString: "6BA7B811-9DAD-11D1-80B4-00C04FD430C8")!
        uuids.append(uuid: u)
        var times = PostgresBinaryArray(.timestamptz)
        times.append(timestamptzMicroseconds: 1_700_000_000_123_456)  // since 1970
        let empty = PostgresBinaryArray(.int4)
        let r = try db.query("""
            SELECT $1::int8[]::text, $2::text[]::text, $3::uuid[]::text,
                   (SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM unnest($4::timestamptz[]) t),
                   cardinality($5::int4[])
            """, parameters: [ints.parameter, texts.parameter, uuids.parameter, times.parameter, empty.parameter])
        #expect(r.rows == [["{1,NULL,-3}", "{héllo,\"\"}", "{6ba7b811-9dad-11d1-80b4-00c04fd430c8}",
                            "2023-11-14T22:13:20.123456", "0"]])
    }

    @Test func errorsCarryTheirSQLStateAndClass() throws {
        let db = try Self.connect()
        defer { db.close() }
        #expect {
            try db.query("SELECT 1 / 0")
        } throws: { e in
            guard let e = e as? PostgresError else { return false }
            return e.code.raw == "22012" && e.code.sqlClass == "22" && e.isDataError && !e.isTransient
        }
        try db.execute("CREATE TEMP TABLE uniq (id int PRIMARY KEY)")
        try db.query("INSERT INTO uniq VALUES (1)")
        #expect {
            try db.query("INSERT INTO uniq VALUES ($1)", ["1"])
        } throws: { e in
            guard let e = e as? PostgresError else { return false }
            return e.code.raw == "23505" && e.isDataError && (e.detail ?? "").contains("(id)=(1)")
        }
        #expect {
            try db.query("SELEC 1")
        } throws: { e in (e as? PostgresError)?.code.raw == "42601" }
        #expect(db.isOpen)  // statement errors leave the session usable
        #expect(try db.query("SELECT 7").rows == [["7"]])
    }

    /// Nobody listens: a transient connection failure whose text does not carry the password.
    @Test func connectionFailureIsTransientAndSecretFree() {
        #expect {
            try PostgresConnection(conninfo: "host=127.0.0.1 port=1 dbname=postgres user=postgres password=s3cr3t-pw connect_timeout=2")
        } throws: { e in
            guard let e = e as? PostgresError else { return false }
            return e.code.sqlClass == "08" && e.isTransient && !"\(e)".contains("s3cr3t-pw")
        }
    }

    @Test func pipelineRunsInOrderAndStopsAtTheFirstError() throws {
        let db = try Self.connect()
        defer { db.close() }
        let results = try db.pipeline([
            PostgresStatement("CREATE TEMP TABLE piped (x int)"),
            PostgresStatement("INSERT INTO piped SELECT generate_series(1, $1::int)", [.text("5")]),
            PostgresStatement("SELECT sum(x) FROM piped"),
        ])
        #expect(results.count == 3)
        #expect(results[1].affectedRows == 5)
        #expect(results[2].rows == [["15"]])

        #expect {
            try db.pipeline([
                PostgresStatement("INSERT INTO piped VALUES (100)"),
                PostgresStatement("INSERT INTO piped VALUES ('not a number')"),
                PostgresStatement("INSERT INTO piped VALUES (200)"),
            ])
        } throws: { e in (e as? PostgresError)?.code.raw == "22P02" }
        // Up to the sync the statements form one implicit transaction: the failure rolled the
        // first back and skipped the third.
        #expect(try db.query("SELECT count(*) FROM piped WHERE x >= 100").rows == [["0"]])
        #expect(try db.query("SELECT count(*) FROM piped").rows == [["5"]])
    }
}
