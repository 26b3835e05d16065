public import KafkaClient

/// One consumed record with its decoding result.
public struct DecodedRecord: Sendable {
    public var record: RecordRef
    public var event: Result<Event, DecodeError>

    public init(record: RecordRef, event: Result<Event, DecodeError>) {
        self.record = record
        self.event = event
    }
}

/// A record as the apply path sees it: the consumed Kafka record itself (the daemon, `replay`),
/// or one rebuilt from a dead letter's stored copy (`dead-letters retry`).
public typealias RecordRef = KafkaRecord
