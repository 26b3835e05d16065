import Foundation

/// One event capture publishes: the record key (the session id), the value (the event's JSON,
/// docs/events.md), and the record timestamp (the transaction's commit time).
public struct CapturedEvent: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]
    public var timestampMs: Int64?
    /// For logs: the message the event is about.
    public var messageID: String
}

/// A change of the messages table capture cannot publish, and why. Retrying can never help (the
/// WAL record itself lacks what is needed), so it is reported and passed over.
public struct UnpublishableChange: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// An UPDATE or DELETE without the old row: the table's `REPLICA IDENTITY` is not `FULL`.
        case noOldRow = "no_old_row"
        /// An unchanged out-of-line (TOAST) value not in the message, and no old row to take it from.
        case unchangedToast = "unchanged_toast"
        /// A mapped column is missing from the table or the row.
        case missingColumn = "missing_column"
        /// A value the event cannot carry (NULL, not an integer or timestamp or uuid, not UTF-8).
        case invalidValue = "invalid_value"
        /// `TRUNCATE`: there is no event for it.
        case truncate
    }

    public var reason: Reason
    public var detail: String
    /// The message concerned, when known.
    public var messageID: String?

    public init(_ reason: Reason, _ detail: String, messageID: String? = nil) {
        self.reason = reason
        self.detail = detail
        self.messageID = messageID
    }

    public var description: String { "\(reason.rawValue): \(detail)" + (messageID.map { " (message \($0))" } ?? "") }
}

/// Turns row changes of the messages table, as pgoutput sends them, into events (pure).
///
/// - INSERT: `message.upserted` of the new row.
/// - UPDATE: `message.upserted` of the new row (an unchanged TOAST value is taken from the old
///   row, which `REPLICA IDENTITY FULL` logs whole). When the message id changed, also
///   `message.deleted` of the old id. A version that did not rise is published as it is and
///   noted: the other regions keep whichever of the two contents wins the equal-version tie.
/// - DELETE: `message.deleted` of the old row's message at its version + 1 (it wins over the
///   deleted version and every edit up to it). A DELETE without the old row — the table's
///   replica identity is not `FULL` — carries no session and no version: unpublishable.
/// - A session erased by `replicator_erase_session` (``CaptureSchema/eraseSessionFunction``):
///   one `session.deleted` event (``erasure(_:in:)``); the DELETEs of its rows in the same
///   transaction publish nothing more.
///
/// Every event names the row's `region` column as `origin_region`, and gets the event id
/// `capture:<region>:<commit LSN>:<n>` (n counts the transaction's events), the same every time
/// the transaction is sent again.
public struct CaptureEventMapper: Sendable {
    public let region: String
    public let columns: MessageColumns

    public init(region: String, columns: MessageColumns) {
        self.region = region
        self.columns = columns
    }

    /// The transaction the changes belong to.
    public struct Transaction: Sendable {
        public var commitLSN: LSN
        public var commitTime: Timestamp?
        /// Events produced so far for this transaction (numbers the event ids).
        public var produced = 0
        /// Sessions erased by `replicator_erase_session` in this transaction, and the instant:
        /// the DELETEs of their rows that follow are part of the erasure, not events of their own.
        public var erased: [String: Timestamp] = [:]

        public init(commitLSN: LSN, commitTime: Timestamp?) {
            self.commitLSN = commitLSN
            self.commitTime = commitTime
        }
    }

    /// The events of one change, and a note when it deserves a warning.
    public struct Mapped: Sendable {
        public var events: [CapturedEvent]
        public var note: String?
    }

    /// The events for `change` (an insert, update or delete) of `relation`.
    /// - Throws: ``UnpublishableChange``.
    public func map(_ change: PgOutputMessage, relation: PgOutputMessage.Relation,
                    in tx: inout Transaction) throws(UnpublishableChange) -> Mapped {
        try map(change, layout: try layout(relation), in: &tx)
    }

    /// Where the mapped columns sit in `relation`'s rows (made once per relation message).
    /// - Throws: ``UnpublishableChange`` (a mapped column is missing).
    func layout(_ relation: PgOutputMessage.Relation) throws(UnpublishableChange) -> Layout {
        try Layout(relation, columns)
    }

    /// The events for `change`, with its relation's ``layout(_:)``.
    func map(_ change: PgOutputMessage, layout: Layout, in tx: inout Transaction) throws(UnpublishableChange) -> Mapped {
        switch change {
        case .insert(_, let new):
            return Mapped(events: [try upsert(try layout.row(new, fill: nil), &tx)])
        case .update(_, let old, let new):
            let fill = old?.kind == .full ? old?.tuple : nil
            let row = try layout.row(new, fill: fill)
            guard let fill else {
                let note = old?.kind == .key ? "the row's key changed and the table's replica identity is not FULL: the old id is not deleted in the other regions" : nil
                return Mapped(events: [try upsert(row, &tx)], note: note)
            }
            let before = try layout.row(fill, fill: nil)
            if before.messageID != row.messageID {
                return Mapped(events: [try deletion(before, &tx), try upsert(row, &tx)])
            }
            let note = row.version > before.version ? nil
                : "the version did not rise (\(before.version) → \(row.version)): the other regions keep whichever content wins the equal-version tie"
            return Mapped(events: [try upsert(row, &tx)], note: note)
        case .delete(_, let old):
            guard old.kind == .full else {
                throw UnpublishableChange(.noOldRow, "a DELETE carries only the key: the table's replica identity is not FULL, so the message's session and version are unknown",
                                          messageID: layout.messageIDText(old.tuple))
            }
            let row = try layout.row(old.tuple, fill: nil)
            if let at = tx.erased[row.sessionID], row.createdAt <= at { return Mapped(events: []) }
            return Mapped(events: [try deletion(row, &tx)])
        default:
            throw UnpublishableChange(.invalidValue, "not a row change")
        }
    }

    // MARK: - Events

    func eventID(_ tx: inout Transaction) -> String {
        defer { tx.produced += 1 }
        return "capture:\(region):\(tx.commitLSN):\(tx.produced)"
    }

    private func upsert(_ row: Row, _ tx: inout Transaction) throws(UnpublishableChange) -> CapturedEvent {
        var j = JSONObjectWriter()
        j.string("type", "message.upserted")
        j.string("event_id", eventID(&tx))
        j.string("message_id", row.messageID)
        j.string("session_id", row.sessionID)
        j.string("role", row.role)
        j.string("content", row.content)
        j.string("origin_region", row.region)
        j.string("created_at", row.createdAt.rfc3339)
        j.integer("version", row.version)
        if let attributes = row.attributes { j.raw("attributes", attributes) }
        return CapturedEvent(key: Array(row.sessionID.utf8), value: j.finish(), timestampMs: tx.commitTime.map { $0.microseconds / 1000 },
                             messageID: row.messageID)
    }

    private func deletion(_ row: Row, _ tx: inout Transaction) throws(UnpublishableChange) -> CapturedEvent {
        guard let at = tx.commitTime else {
            throw UnpublishableChange(.invalidValue, "the transaction's commit time is out of range", messageID: row.messageID)
        }
        var j = JSONObjectWriter()
        j.string("type", "message.deleted")
        j.string("event_id", eventID(&tx))
        j.string("message_id", row.messageID)
        j.string("session_id", row.sessionID)
        j.string("origin_region", row.region)
        j.string("occurred_at", at.rfc3339)
        // Above the deleted version (so an edit up to it never brings the message back), and
        // never past the largest version an event may carry.
        j.integer("version", row.version < Int64.max ? row.version + 1 : Int64.max)
        return CapturedEvent(key: Array(row.sessionID.utf8), value: j.finish(), timestampMs: at.microseconds / 1000,
                             messageID: row.messageID)
    }
}
