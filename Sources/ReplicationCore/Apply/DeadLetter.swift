/// A dead letter to record.
public struct DeadLetter: Sendable {
    public var record: RecordRef
    public var error: String
}
