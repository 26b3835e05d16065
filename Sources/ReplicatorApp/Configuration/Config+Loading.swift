public import Foundation

// MARK: - Loading: file I/O, then environment overrides, then validation

extension ReplicatorConfig {
    /// Reads, parses, overrides (from `environment`) and validates the file at `path`.
    /// - Throws: ``ConfigError``; a missing or unreadable file gives
    ///   `<path>: cannot read configuration file: <strerror>`.
    public static func load(
        path: String, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(ConfigError) -> ReplicatorConfig {
        let text: String
        switch readFile(atPath: path, limit: 16 << 20) {
        case .success(let bytes):
            guard let decoded = String(validating: bytes, as: UTF8.self) else {
                throw ConfigError(file: path, key: nil, message: "cannot read configuration file: not valid UTF-8")
            }
            text = decoded
        case .failure(let failure):
            throw ConfigError(file: path, key: nil, message: "cannot read configuration file: \(failure)")
        }
        return try parse(yaml: text, path: path, environment: environment)
    }

    /// Parses `yaml` as if read from `path` (used in errors and to resolve relative `dsn_file`
    /// paths), applies the overrides from `environment`, and validates.
    public static func parse(yaml: String, path: String, environment: [String: String]) throws(ConfigError) -> ReplicatorConfig {
        var raw = try RawConfig.parse(yaml: yaml, file: path)
        try raw.applyEnvironment(environment, file: path)
        return try raw.validated(file: path, environment: environment)
    }
}

/// Why a file could not be read: strerror text or another short reason (no contents).
struct ReadFailure: Error, CustomStringConvertible {
    var description: String
}

/// Reads at most `limit` bytes of a regular file.
func readFile(atPath path: String, limit: Int) -> Result<[UInt8], ReadFailure> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    if fd < 0 { return .failure(ReadFailure(description: String(cString: strerror(errno)))) }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 * 1024)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return .failure(ReadFailure(description: String(cString: strerror(errno))))
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
        if bytes.count > limit { return .failure(ReadFailure(description: "larger than \(limit) bytes")) }
    }
    return .success(bytes)
}
