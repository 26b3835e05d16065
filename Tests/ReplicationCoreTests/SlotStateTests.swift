import Testing

@testable import ReplicationCore

/// The parsing and encoding of a capture slot's state (docs/metrics.md).
@Suite("Capture slot state")
struct SlotStateTests {
    @Test("pg_wal_lsn_diff's numeric text parses as bytes held; a negative difference is 0; anything else is unknown")
    func retainedBytes() {
        #expect(SlotState.bytes("16384") == 16384)
        #expect(SlotState.bytes("16384.0") == 16384)
        #expect(SlotState.bytes("-120") == 0)
        #expect(SlotState.bytes("") == nil)
        #expect(SlotState.bytes("NaN") == nil)
        #expect(SlotState.bytes("99999999999999999999999") == nil)
    }

    @Test("wal_status gauge encoding: 0 unknown, 1 reserved, 2 extended, 3 unreserved, 4 lost, 5 missing")
    func walStatusEncoding() {
        #expect(SlotState.gaugeValue(walStatus: "reserved", exists: true) == 1)
        #expect(SlotState.gaugeValue(walStatus: "extended", exists: true) == 2)
        #expect(SlotState.gaugeValue(walStatus: "unreserved", exists: true) == 3)
        #expect(SlotState.gaugeValue(walStatus: "lost", exists: true) == 4)
        #expect(SlotState.gaugeValue(walStatus: nil, exists: false) == 5)
        #expect(SlotState.gaugeValue(walStatus: nil, exists: true) == 0)
        #expect(SlotState.gaugeValue(walStatus: "something new", exists: true) == 0)
        #expect(SlotState(active: false, walStatus: "lost", retainedBytes: nil, confirmed: nil).lost)
    }
}
