/// A position in a Postgres server's write-ahead log (`pg_lsn`): a 64-bit byte offset, written
/// `X/X` (the high and low 32 bits in hex, e.g. `0/15113C0`).
public struct LSN: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var value: UInt64

    public init(_ value: UInt64) { self.value = value }

    /// `0/0`: "from wherever the slot is" when starting replication.
    public static let zero = LSN(0)

    public static func < (a: LSN, b: LSN) -> Bool { a.value < b.value }

    /// `X/X`, upper-case hex, as Postgres prints a `pg_lsn`.
    public var description: String {
        String(value >> 32, radix: 16, uppercase: true) + "/" + String(value & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// Parses Postgres's `X/X` text (1–8 hex digits on each side); nil for anything else.
    public init?(text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2,
              parts.allSatisfy({ (1...8).contains($0.utf8.count) && $0.utf8.allSatisfy(\.isHexDigitASCII) }),
              let hi = UInt64(parts[0], radix: 16), let lo = UInt64(parts[1], radix: 16)
        else { return nil }
        value = hi << 32 | lo
    }
}

extension UInt8 {
    var isHexDigitASCII: Bool { (48...57).contains(self) || (65...70).contains(self) || (97...102).contains(self) }
}
