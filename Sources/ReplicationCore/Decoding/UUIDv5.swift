public import Foundation
import Crypto

/// Name-based UUIDs, version 5 (SHA-1), per RFC 4122 §4.3 — identical to Python's `uuid.uuid5`.
public enum UUIDv5 {
    /// The RFC 4122 URL namespace, `6ba7b811-9dad-11d1-80b4-00c04fd430c8` (Python's `uuid.NAMESPACE_URL`).
    public static let urlNamespace = UUID(uuid: (0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1,
                                                 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8))

    /// The version-5 UUID of `name` (raw bytes, e.g. a string's UTF-8) in `namespace`:
    /// SHA-1 over the namespace's 16 bytes followed by the name, truncated to 16 bytes, with the
    /// version nibble set to 5 and the variant bits to RFC 4122 (`10xx`).
    public static func make(namespace: UUID, name: some Sequence<UInt8>) -> UUID {
        var hasher = Insecure.SHA1()
        withUnsafeBytes(of: namespace.uuid) { hasher.update(bufferPointer: $0) }
        let hashedContiguous: Void? = name.withContiguousStorageIfAvailable { buffer in
            hasher.update(bufferPointer: UnsafeRawBufferPointer(buffer))
        }
        if hashedContiguous == nil {
            Array(name).withUnsafeBytes { hasher.update(bufferPointer: $0) }
        }
        let digest = hasher.finalize()

        var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &bytes) { out in
            digest.withUnsafeBytes { sha in
                for i in 0..<16 { out[i] = sha[i] }
            }
            out[6] = (out[6] & 0x0F) | 0x50  // version 5
            out[8] = (out[8] & 0x3F) | 0x80  // variant RFC 4122
        }
        return UUID(uuid: bytes)
    }
}
