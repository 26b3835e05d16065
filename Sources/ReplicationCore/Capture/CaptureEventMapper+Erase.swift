import Foundation

extension CaptureEventMapper {
    /// The `session.deleted` event of a logical message `replicator_erase_session` wrote
    /// (prefix ``CaptureSchema/sessionErasurePrefix``; content
    /// `{"session_id": …, "occurred_at": "…Z"}`), keyed by the session id, with the capturing
    /// region as `origin_region`. Remembers the erasure in `tx`: the DELETEs of the session's
    /// rows that follow in the transaction publish nothing more.
    /// - Throws: ``UnpublishableChange`` (`invalid_value`) for content that is not such an
    ///   object (the message is read as hostile as any database reply).
    public func erasure(_ content: [UInt8], in tx: inout Transaction) throws(UnpublishableChange) -> Mapped {
        guard content.count <= 4096,
              let object = try? JSONSerialization.jsonObject(with: Data(content)) as? [String: Any],
              let session = object["session_id"] as? String, let occurred = object["occurred_at"] as? String else {
            throw UnpublishableChange(.invalidValue, "a session erasure message is not {\"session_id\": …, \"occurred_at\": …}")
        }
        guard !session.isEmpty, session.utf8.count <= 256, !session.utf8.contains(0) else {
            throw UnpublishableChange(.invalidValue, "a session erasure names a session id that is not 1 to 256 bytes of UTF-8 without NUL")
        }
        guard let at = Timestamp(rfc3339: occurred) else {
            throw UnpublishableChange(.invalidValue, "a session erasure's occurred_at is not an ISO timestamp: \(occurred.prefix(40))")
        }
        tx.erased[session] = max(tx.erased[session] ?? at, at)
        var j = JSONObjectWriter()
        j.string("type", "session.deleted")
        j.string("event_id", eventID(&tx))
        j.string("session_id", session)
        j.string("origin_region", region)
        j.string("occurred_at", at.rfc3339)
        let event = CapturedEvent(key: Array(session.utf8), value: j.finish(),
                                  timestampMs: (tx.commitTime ?? at).microseconds / 1000, messageID: "session \(session)")
        return Mapped(events: [event])
    }
}
