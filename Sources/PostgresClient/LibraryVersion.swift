internal import CLibPQ

/// The libpq this process runs with (`PQlibVersion()`), e.g. "15.13".
public func libpqRuntimeVersion() -> String {
    let v = Int(PQlibVersion())
    // Since PostgreSQL 10 the number is major * 10000 + minor; before it, major.minor.patch in pairs.
    return v >= 100_000 ? "\(v / 10000).\(v % 10000)" : "\(v / 10000).\(v / 100 % 100).\(v % 100)"
}
