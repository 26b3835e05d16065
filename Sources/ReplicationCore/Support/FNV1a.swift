/// FNV-1a, 64 bits: the stable hash of the apply locks' buckets and of the session tokens'
/// scope. The multiplication is the hash's own arithmetic modulo 2⁶⁴ (the algorithm's
/// definition), not a computation on a value that could turn implausible.
struct FNV1a {
    private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    mutating func add(_ bytes: some Sequence<UInt8>) {
        for b in bytes { value = (value ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    }

    static func hash(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var h = FNV1a()
        h.add(bytes)
        return h.value
    }
}
