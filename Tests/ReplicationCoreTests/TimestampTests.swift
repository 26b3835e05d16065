import Testing
@testable import ReplicationCore

// Expected epoch values were computed independently with Python:
//   d = datetime.fromisoformat(s) (naive → tzinfo=UTC); (d - 1970-01-01T00:00Z) in microseconds.
@Suite struct TimestampTests {
    @Test(arguments: [
        ("2026-11-24T10:00:00.123456", Int64(1_795_514_400_123_456)),
        ("2026-11-24T10:00:00.123456Z", 1_795_514_400_123_456),
        ("2026-11-24T10:00:00.123Z", 1_795_514_400_123_000),
        ("2026-11-24T10:00:00Z", 1_795_514_400_000_000),
        ("2026-11-24t10:00:00z", 1_795_514_400_000_000),
        ("2026-11-24 10:00:00", 1_795_514_400_000_000),
        ("2026-11-24T12:00:00+02:00", 1_795_514_400_000_000),
        ("2026-11-24T12:00:00+0200", 1_795_514_400_000_000),
        ("2026-11-24T12:00:00+02", 1_795_514_400_000_000),
        ("2026-11-24T05:30:00.123456-04:30", 1_795_514_400_123_456),
        ("2026-11-24T10:00:00+00:00", 1_795_514_400_000_000),
        ("1969-07-20T20:17:40.5Z", -14_182_939_500_000),
        ("1969-12-31T23:59:59.999999", -1),
        ("1970-01-01T00:00:00Z", 0),
        ("1900-03-01T00:00:00", -2_203_891_200_000_000),
        ("0001-01-01T00:00:00Z", -62_135_596_800_000_000),
        ("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999),
        ("2024-02-29T23:59:59.999999Z", 1_709_251_199_999_999),
    ])
    func parses(_ text: String, _ expected: Int64) {
        #expect(Timestamp(rfc3339: text)?.microseconds == expected)
    }

    @Test func noOffsetMeansUTC() {
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.123456") == Timestamp(rfc3339: "2026-11-24T10:00:00.123456Z"))
    }

    @Test func offsetsAreConverted() {
        let t = Timestamp(rfc3339: "2026-11-24T12:00:00.5+02:00")
        #expect(t?.rfc3339 == "2026-11-24T10:00:00.500000Z")
        #expect(Timestamp(rfc3339: "2026-11-23T23:00:00-11:00")?.rfc3339 == "2026-11-24T10:00:00.000000Z")
    }

    @Test func microsecondsKeptExactly() {
        let t = Timestamp(rfc3339: "2026-11-24T10:00:00.123456Z")!
        #expect(t.microseconds % 1_000_000 == 123_456)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.000001Z")!.microseconds % 1_000_000 == 1)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.999999Z")!.microseconds % 1_000_000 == 999_999)
    }

    @Test func fractionBeyondMicrosecondsIsRoundedAsPostgresDoes() {
        // rint(double(fraction) × 10^6): half to even on the double (NineDigitFractionTests
        // checks ~35,000 texts against a real Postgres).
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.1234569Z")?.microseconds == 1_795_514_400_123_457)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.123456999Z")?.microseconds == 1_795_514_400_123_457)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.1234564Z")?.microseconds == 1_795_514_400_123_456)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.0000025Z")?.microseconds == 1_795_514_400_000_002)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.0000015Z")?.microseconds == 1_795_514_400_000_002)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.0000005Z")?.microseconds == 1_795_514_400_000_000)
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.9999995Z")?.microseconds == 1_795_514_401_000_000)
        // more than 9 fraction digits is rejected
        #expect(Timestamp(rfc3339: "2026-11-24T10:00:00.1234567890Z") == nil)
    }

    @Test func leapSecondFoldsIntoTheNextSecond() {
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:60Z") == Timestamp(rfc3339: "2017-01-01T00:00:00Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:60.000Z") == Timestamp(rfc3339: "2017-01-01T00:00:00Z"))
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:60.5Z") == nil)
        #expect(Timestamp(rfc3339: "2016-12-31T23:59:61Z") == nil)
    }

    @Test func leapDays() {
        #expect(Timestamp(rfc3339: "2024-02-29T00:00:00Z") != nil)
        #expect(Timestamp(rfc3339: "2000-02-29T00:00:00Z") != nil)
        #expect(Timestamp(rfc3339: "2023-02-29T00:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "1900-02-29T00:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "2024-02-30T00:00:00Z") == nil)
    }

    @Test(arguments: [
        "", "2026-11-24", "2026-11-24T10:00", "2026-11-24T10:00:00.", "2026-11-24T10:00:00.Z",
        "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-04-31T00:00:00Z", "2026-01-00T00:00:00Z",
        "2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "0000-01-01T00:00:00Z", "+2026-01-01T00:00:00Z",
        "2026-01-01T00:00:00+24:00", "2026-01-01T00:00:00+02:60", "2026-01-01T00:00:00+2",
        "2026-01-01T00:00:00+02:0", "2026-01-01T00:00:00ZZ", "2026-01-01T00:00:00 ", " 2026-01-01T00:00:00",
        "2026-01-01X00:00:00", "2026/01/01T00:00:00", "2026-1-01T00:00:00Z", "２026-01-01T00:00:00Z",
        "2026-01-01T00:00:00.12a", "2026-01-01T00:00:00UTC", "not a timestamp",
    ])
    func rejects(_ text: String) {
        #expect(Timestamp(rfc3339: text) == nil)
    }

    @Test func acceptsSubstrings() {
        let s = "[2026-11-24T10:00:00Z]"
        #expect(Timestamp(rfc3339: s.dropFirst().dropLast())?.microseconds == 1_795_514_400_000_000)
    }

    @Test func formats() {
        let t = Timestamp(microseconds: 1_795_514_400_123_456)
        #expect(t.postgresText == "2026-11-24 10:00:00.123456+00")
        #expect(t.rfc3339 == "2026-11-24T10:00:00.123456Z")
        #expect(t.description == t.postgresText)
        #expect(Timestamp(microseconds: 0).postgresText == "1970-01-01 00:00:00.000000+00")
        #expect(Timestamp(microseconds: -1).postgresText == "1969-12-31 23:59:59.999999+00")
        #expect(Timestamp(microseconds: -1).rfc3339 == "1969-12-31T23:59:59.999999Z")
        #expect(Timestamp(microseconds: -14_182_939_500_000).rfc3339 == "1969-07-20T20:17:40.500000Z")
        #expect(Timestamp(microseconds: -62_135_596_800_000_000).postgresText == "0001-01-01 00:00:00.000000+00")
        // one microsecond before 0001-01-01 is 1 BC (astronomical year 0)
        #expect(Timestamp(microseconds: -62_135_596_800_000_001).postgresText == "0001-12-31 23:59:59.999999+00 BC")
        #expect(Timestamp(microseconds: -62_135_596_800_000_001).rfc3339 == "0000-12-31T23:59:59.999999Z")
        // the extremes of Int64 do not trap
        _ = Timestamp(microseconds: .min).postgresText
        _ = Timestamp(microseconds: .max).rfc3339
    }

    @Test(arguments: [
        "2026-11-24T10:00:00.123456Z", "1969-07-20T20:17:40.500000Z", "1969-12-31T23:59:59.999999Z",
        "2024-02-29T12:34:56.789012Z", "1900-03-01T00:00:00.000000Z", "0001-01-01T00:00:00.000000Z",
        "9999-12-31T23:59:59.999999Z", "2000-02-29T00:00:00.000001Z", "1600-02-29T00:00:00.000000Z",
    ])
    func roundTrips(_ text: String) throws {
        let t = try #require(Timestamp(rfc3339: text))
        #expect(t.rfc3339 == text)
        let pg = t.postgresText
        #expect(Timestamp(rfc3339: pg + ":00") == t)
        #expect(pg.hasSuffix("+00"))
        #expect(Timestamp(rfc3339: String(pg.dropLast(3))) == t)  // no offset = UTC
    }

    @Test func everyDayOfFourHundredYearsRoundTrips() {
        // Walks 1800-01-01 ... 2200-01-01 by days: formatting and parsing agree, days are consecutive.
        let start = Timestamp(rfc3339: "1800-01-01T00:00:00Z")!.microseconds
        let day: Int64 = 86_400_000_000
        for k in Int64(0)..<146_097 {
            let t = Timestamp(microseconds: start + k * day + 1)
            guard Timestamp(rfc3339: t.rfc3339) == t else {
                Issue.record("round trip failed for \(t.rfc3339)")
                return
            }
        }
    }

    @Test func fromSeconds() {
        #expect(Timestamp.fromSeconds(1.5).microseconds == 1_500_000)
        #expect(Timestamp.fromSeconds(-0.000001).microseconds == -1)
        #expect(Timestamp.fromSeconds(1_795_514_400.123456).microseconds == 1_795_514_400_123_456)
        #expect(Timestamp.fromSeconds(.nan).microseconds == 0)
        #expect(Timestamp.fromSeconds(.infinity).microseconds == .max)
        #expect(Timestamp.fromSeconds(-.infinity).microseconds == .min)
        #expect(Timestamp.fromSeconds(1e300).microseconds == .max)
    }

    @Test func now() {
        let a = Timestamp.now
        // After 2024-01-01 and before 2100-01-01.
        #expect(a > Timestamp(rfc3339: "2024-01-01T00:00:00Z")!)
        #expect(a < Timestamp(rfc3339: "2100-01-01T00:00:00Z")!)
        #expect(Timestamp.now >= a)
    }
}
