import Foundation

/// A session token: which acknowledged write a session last made, so that `/fresh` can wait
/// for that write only (docs/operations.md, "Routing a session that moved region").
///
/// 21 bytes, base64url without padding (28 characters): a version byte (1), the 8-byte scope
/// (FNV-1a 64 of `"<cluster id>/<topic>"`, big-endian), the partition (4 bytes, big-endian)
/// and the offset (8 bytes, big-endian). The scope tells a token of another cluster or topic
/// apart, so that it is refused instead of read as an offset of this topic.
public struct FreshToken: Sendable, Hashable {
    public static let version: UInt8 = 1
    public static let byteCount = 21

    public var scope: UInt64
    public var partition: Int32
    public var offset: Int64

    public init(scope: UInt64, partition: Int32, offset: Int64) {
        self.scope = scope
        self.partition = partition
        self.offset = offset
    }

    /// The scope of a topic on a cluster.
    public static func scope(clusterID: String, topic: String) -> UInt64 {
        FNV1a.hash("\(clusterID)/\(topic)".utf8)
    }

    public var encoded: String {
        var bytes = [Self.version]
        bytes += withUnsafeBytes(of: scope.bigEndian, Array.init)
        bytes += withUnsafeBytes(of: partition.bigEndian, Array.init)
        bytes += withUnsafeBytes(of: offset.bigEndian, Array.init)
        return Base64URL.encode(bytes)
    }

    /// Why a token text is not a token.
    public struct Malformed: Error, CustomStringConvertible {
        public var description: String
    }

    /// Decodes a token; hostile text is refused, never trapped on.
    public init(encoded text: String) throws(Malformed) {
        guard text.utf8.count == 28 else { throw Malformed(description: "a token is 28 base64url characters") }
        guard let b = Base64URL.decode(text), b.count == Self.byteCount else { throw Malformed(description: "not base64url") }
        guard b[0] == Self.version else { throw Malformed(description: "token version \(b[0]) is not supported (1 is)") }
        scope = Base64URL.bigEndian(b[1..<9])
        partition = Int32(bitPattern: UInt32(truncatingIfNeeded: Base64URL.bigEndian(b[9..<13])))
        offset = Int64(bitPattern: Base64URL.bigEndian(b[13..<21]))
        guard partition >= 0, offset >= 0 else { throw Malformed(description: "negative partition or offset") }
    }
}

/// A session token for a local write in a capturing region (docs/operations.md): the write
/// reaches the topic from the region's slot, so the application cannot know its offset. It knows
/// the region's WAL position read after its commit (`pg_current_wal_lsn()`, ≥ the commit's).
///
/// base64url without padding of: a version byte (2), the 8-byte scope (as ``FreshToken``), the
/// LSN (8 bytes, big-endian) and the region's name (UTF-8, 1–64 bytes).
public struct FreshCaptureToken: Sendable, Hashable {
    public static let version: UInt8 = 2

    public var scope: UInt64
    public var region: String
    public var lsn: LSN

    public init(scope: UInt64, region: String, lsn: LSN) {
        self.scope = scope
        self.region = region
        self.lsn = lsn
    }

    public var encoded: String {
        var bytes = [Self.version]
        bytes += withUnsafeBytes(of: scope.bigEndian, Array.init)
        bytes += withUnsafeBytes(of: lsn.value.bigEndian, Array.init)
        bytes += Array(region.utf8)
        return Base64URL.encode(bytes)
    }

    /// Decodes a version-2 token; hostile text is refused, never trapped on.
    public init(encoded text: String) throws(FreshToken.Malformed) {
        let n = text.utf8.count
        guard (24...108).contains(n) else { throw FreshToken.Malformed(description: "not a capture token") }
        guard let b = Base64URL.decode(text) else { throw FreshToken.Malformed(description: "not base64url") }
        guard b.count >= 18, b.count <= 81, b[0] == Self.version else {
            throw FreshToken.Malformed(description: "not a version 2 token")
        }
        guard let name = String(validating: b[17...], as: UTF8.self), !name.isEmpty,
              name.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F }) else {
            throw FreshToken.Malformed(description: "the region name is not printable UTF-8")
        }
        scope = Base64URL.bigEndian(b[1..<9])
        lsn = LSN(Base64URL.bigEndian(b[9..<17]))
        region = name
    }
}

/// base64url without padding (RFC 4648 §5), the session tokens' text form.
enum Base64URL {
    static func encode(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// The bytes of `text`; nil for anything but unpadded base64url (standard `+`, `/`, `=`
    /// and non-ASCII included).
    static func decode(_ text: String) -> [UInt8]? {
        let n = text.utf8.count
        guard n % 4 != 1, text.utf8.allSatisfy({ $0 < 128 }), !text.contains("+"), !text.contains("/"), !text.contains("=") else {
            return nil
        }
        let standard = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        return Data(base64Encoded: standard + String(repeating: "=", count: (4 - n % 4) % 4)).map(Array.init)
    }

    /// The unsigned big-endian number of up to 8 bytes.
    static func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.reduce(0) { $0 << 8 | UInt64($1) } }
}
