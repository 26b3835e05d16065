#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

// RFC 3339 parsing and formatting for `Timestamp`, by hand, with integer arithmetic only.
//
// Why not `DateFormatter` / `ISO8601FormatStyle`: they are slow, go through `Double` (losing the
// exact microsecond) and reject the offset-less form that Python's
// `datetime.utcnow().isoformat()` writes (read as UTC, see docs/events.md).

extension Timestamp {
    /// Parses an RFC 3339 timestamp (plus the offset-less form, which means UTC).
    ///
    /// Accepted grammar (ASCII only, nothing before or after):
    ///
    ///     YYYY-MM-DD ( "T" | "t" | " " ) HH:MM:SS [ "." 1*9DIGIT ] [ offset ]
    ///     offset = "Z" | "z" | ( "+" | "-" ) HH [ [":"] MM ]
    ///
    /// - No offset means UTC.
    /// - Fractional seconds: 1 to 9 digits. Up to 6 digits are kept exactly; 7 to 9 digits are
    ///   **rounded** to the microsecond exactly as PostgreSQL rounds the same text
    ///   (``RFC3339/roundedMicroseconds(_:count:)``), so the row an application INSERTs with that
    ///   text and the daemon's replica hold the same instant. More than 9 digits is rejected.
    /// - Ranges: year 0001–9999, month 1–12, day valid for the month (leap years included),
    ///   hour 0–23, minute 0–59, second 0–60; offset hours 0–23, minutes 0–59.
    /// - Leap second: `:60` is accepted only with a zero fraction and is **folded** into the
    ///   following second (`23:59:60Z` = `00:00:00Z` of the next day), as Postgres does. Unix
    ///   time has no leap seconds, so this is the only lossless-enough choice.
    ///
    /// Returns `nil` for anything else.
    public init?(rfc3339 text: some StringProtocol) {
        let parsed: Int64?? = text.utf8.withContiguousStorageIfAvailable { RFC3339.parse($0) }
        let result: Int64?
        if let parsed {
            result = parsed
        } else {
            result = Array(text.utf8).withUnsafeBufferPointer { RFC3339.parse($0) }
        }
        guard let result else { return nil }
        self.init(microseconds: result)
    }

    /// A Postgres `timestamptz` text literal in UTC, always with 6 fraction digits, e.g.
    /// `2026-11-24 10:00:00.123456+00`. Years before 1 AD use Postgres's ` BC` suffix
    /// (astronomical year 0 = 1 BC); years after 9999 are written with more digits.
    public var postgresText: String {
        let c = RFC3339.civil(microseconds)
        var out = ""
        out.reserveCapacity(32)
        let bc = c.year <= 0
        RFC3339.appendPadded(&out, bc ? 1 - c.year : c.year, width: 4)
        out.append("-")
        RFC3339.appendPadded(&out, c.month, width: 2)
        out.append("-")
        RFC3339.appendPadded(&out, c.day, width: 2)
        out.append(" ")
        RFC3339.appendTime(&out, c)
        out.append("+00")
        if bc { out.append(" BC") }
        return out
    }

    /// RFC 3339 in UTC, always with 6 fraction digits, e.g. `2026-11-24T10:00:00.123456Z`.
    /// (Outside years 0000–9999, which RFC 3339 cannot express, the year is written as an ISO 8601
    /// expanded year: a leading `-` for negative astronomical years, more digits above 9999.)
    public var rfc3339: String {
        let c = RFC3339.civil(microseconds)
        var out = ""
        out.reserveCapacity(27)
        if c.year < 0 { out.append("-") }
        RFC3339.appendPadded(&out, c.year < 0 ? -c.year : c.year, width: 4)
        out.append("-")
        RFC3339.appendPadded(&out, c.month, width: 2)
        out.append("-")
        RFC3339.appendPadded(&out, c.day, width: 2)
        out.append("T")
        RFC3339.appendTime(&out, c)
        out.append("Z")
        return out
    }

    /// The canonical text of a seed-style event's `created_at` in its id derivation: UTC, no
    /// offset, `T` separator, always six fraction digits, e.g. `2026-11-24T10:00:00.123456` —
    /// what Python's `datetime.utcnow().isoformat()` writes whenever the microsecond is not 0.
    /// The database's id trigger produces the same text (``SeedID/createdAtTextSQL(_:)``).
    public var seedIDText: String {
        var out = rfc3339
        out.removeLast()  // the "Z"
        return out
    }

    /// Seconds since the Unix epoch, rounded to the nearest microsecond. Non-finite or
    /// out-of-range input is clamped (NaN gives the epoch) rather than trapping.
    public static func fromSeconds(_ s: Double) -> Timestamp {
        guard !s.isNaN else { return Timestamp(microseconds: 0) }
        let us = (s * 1_000_000).rounded()
        // Int64.max is not exactly representable; 2^63 as Double is the first value that overflows.
        if us >= 9_223_372_036_854_775_808.0 { return Timestamp(microseconds: .max) }
        if us < -9_223_372_036_854_775_808.0 { return Timestamp(microseconds: .min) }
        return Timestamp(microseconds: Int64(us))
    }

    /// The current wall-clock time (`CLOCK_REALTIME`), truncated to the microsecond.
    public static var now: Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(microseconds: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000)
    }
}

/// The implementation, on raw UTF-8 bytes.
enum RFC3339 {
    struct Civil {
        var year: Int64, month: Int64, day: Int64
        var hour: Int64, minute: Int64, second: Int64, micro: Int64
    }

    static let microsPerSecond: Int64 = 1_000_000
    static let microsPerDay: Int64 = 86_400_000_000

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
    static func daysFromCivil(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400                                            // [0, 399]
        let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1  // [0, 365]
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy                    // [0, 146096]
        return era * 146_097 + doe - 719_468
    }

    /// The inverse of `daysFromCivil` (Hinnant's `civil_from_days`).
    static func civilFromDays(_ days: Int64) -> (year: Int64, month: Int64, day: Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097                                          // [0, 146096]
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365     // [0, 399]
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)                    // [0, 365]
        let mp = (5 * doy + 2) / 153                                         // [0, 11]
        let day = doy - (153 * mp + 2) / 5 + 1                               // [1, 31]
        let month = mp < 10 ? mp + 3 : mp - 9                                // [1, 12]
        return (yoe + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func civil(_ microseconds: Int64) -> Civil {
        // Floor division, so that instants before 1970 get a non-negative time of day.
        var days = microseconds / microsPerDay
        var rem = microseconds % microsPerDay
        if rem < 0 { rem += microsPerDay; days -= 1 }
        let (y, m, d) = civilFromDays(days)
        let secs = rem / microsPerSecond
        return Civil(year: y, month: m, day: d, hour: secs / 3600, minute: secs / 60 % 60,
                     second: secs % 60, micro: rem % microsPerSecond)
    }

    static func isLeapYear(_ y: Int64) -> Bool { y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) }

    static func daysInMonth(_ y: Int64, _ m: Int64) -> Int64 {
        switch m {
        case 2: isLeapYear(y) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    static func appendPadded(_ out: inout String, _ value: Int64, width: Int) {
        let digits = String(value)
        if digits.utf8.count < width { out.append(String(repeating: "0", count: width - digits.utf8.count)) }
        out.append(digits)
    }

    static func appendTime(_ out: inout String, _ c: Civil) {
        appendPadded(&out, c.hour, width: 2)
        out.append(":")
        appendPadded(&out, c.minute, width: 2)
        out.append(":")
        appendPadded(&out, c.second, width: 2)
        out.append(".")
        appendPadded(&out, c.micro, width: 6)
    }

    /// Powers of ten 10^0 … 10^9, exact as `Double`s.
    static let powersOfTen: [Double] = [1, 10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9]

    /// The microseconds (0 … 1,000,000) of a fraction of `count` digits (1 … 9) whose value as an
    /// integer is `digits`, rounded exactly as PostgreSQL rounds the same text (`ParseFractionalSecond`
    /// in `datetime.c`: `strtod` of the fraction, then `rint(frac * 1000000)`). Up to six digits
    /// that is the exact value. With seven to nine, the binary double of the fraction decides:
    /// `Double(digits) / 10^count` is the correctly rounded quotient (both operands are exact),
    /// which is what glibc's `strtod` returns for the text; the product is rounded like C's, and
    /// `rint` in the default rounding mode rounds half to even. So `.0000005` gives 0 and
    /// `.0000015` gives 2, and a fraction whose double falls just below a half rounds down.
    /// 1,000,000 (from `.9999995` up) carries into the next second, as in PostgreSQL.
    static func roundedMicroseconds(_ digits: Int64, count: Int) -> Int64 {
        if count <= 6 {
            var micro = digits
            for _ in count..<6 { micro *= 10 }
            return micro
        }
        let fraction = Double(digits) / powersOfTen[count]
        return Int64((fraction * 1_000_000).rounded(.toNearestOrEven))
    }

    /// Microseconds since the epoch, or nil when `b` is not an accepted timestamp.
    static func parse(_ b: UnsafeBufferPointer<UInt8>) -> Int64? {
        let n = b.count
        // Shortest form: "YYYY-MM-DDTHH:MM:SS" = 19 bytes.
        guard n >= 19, n <= 64 else { return nil }

        @inline(__always) func digits(_ at: Int, _ count: Int) -> Int64? {
            var v: Int64 = 0
            for i in at..<(at + count) {
                let d = b[i] &- 0x30
                guard d <= 9 else { return nil }
                v = v * 10 + Int64(d)
            }
            return v
        }

        guard let year = digits(0, 4), b[4] == UInt8(ascii: "-"),
              let month = digits(5, 2), b[7] == UInt8(ascii: "-"),
              let day = digits(8, 2),
              b[10] == UInt8(ascii: "T") || b[10] == UInt8(ascii: "t") || b[10] == UInt8(ascii: " "),
              let hour = digits(11, 2), b[13] == UInt8(ascii: ":"),
              let minute = digits(14, 2), b[16] == UInt8(ascii: ":"),
              let second = digits(17, 2)
        else { return nil }

        guard year >= 1, year <= 9999, month >= 1, month <= 12,
              day >= 1, day <= daysInMonth(year, month),
              hour <= 23, minute <= 59, second <= 60
        else { return nil }

        var i = 19
        var micro: Int64 = 0
        var fractionIsZero = true
        if i < n, b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            var digits: Int64 = 0
            while i < n, b[i] &- 0x30 <= 9 {
                let d = Int64(b[i] &- 0x30)
                if d != 0 { fractionIsZero = false }
                if i - start < 9 { digits = digits * 10 + d }
                i += 1
            }
            let count = i - start
            guard count >= 1, count <= 9 else { return nil }
            micro = roundedMicroseconds(digits, count: count)
        }
        if second == 60, !fractionIsZero { return nil }

        var offsetSeconds: Int64 = 0
        if i < n {
            switch b[i] {
            case UInt8(ascii: "Z"), UInt8(ascii: "z"):
                i += 1
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                let sign: Int64 = b[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard i + 2 <= n, let oh = digits(i, 2), oh <= 23 else { return nil }
                i += 2
                var om: Int64 = 0
                if i < n {
                    if b[i] == UInt8(ascii: ":") { i += 1 }
                    guard i + 2 <= n, let m = digits(i, 2), m <= 59 else { return nil }
                    om = m
                    i += 2
                }
                offsetSeconds = sign * (oh * 3600 + om * 60)
            default:
                return nil
            }
        }
        guard i == n else { return nil }

        let days = daysFromCivil(year: year, month: month, day: day)
        let secondsOfDay = hour * 3600 + minute * 60 + second  // :60 folds into the next second
        return (days * 86_400 + secondsOfDay - offsetSeconds) * microsPerSecond + micro
    }
}
