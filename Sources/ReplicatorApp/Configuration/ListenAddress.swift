// MARK: - `http.listen`: host:port parsing

extension ReplicatorConfig {
    /// Splits and validates `host:port` (IPv6 in brackets).
    static func splitListen(_ text: String) -> (host: String, port: Int)? {
        if case .success(let pair) = checkListen(text) { return pair }
        return nil
    }

    /// Why `text` is not a valid `host:port`, or the split pair.
    static func checkListen(_ text: String) -> Result<(host: String, port: Int), ReadFailure> {
        func fail(_ why: String) -> Result<(host: String, port: Int), ReadFailure> { .failure(ReadFailure(description: why)) }
        let form = "expected host:port such as 127.0.0.1:9466, 0.0.0.0:9466 or [::1]:9466"
        let host: Substring
        let port: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return fail("\(form), got \(quoted(text))") }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.first == ":" else { return fail("\(form), got \(quoted(text))") }
            port = rest.dropFirst()
            let parts = host.split(separator: "%", maxSplits: 1, omittingEmptySubsequences: false)
            let address = parts[0]
            let addressOK = address.contains(":") && address.allSatisfy { $0.isHexDigit || $0 == ":" || $0 == "." }
            let zoneOK = parts.count == 1 || (!parts[1].isEmpty && parts[1].allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) })
            guard addressOK && zoneOK else { return fail("invalid IPv6 address in \(quoted(text))") }
        } else {
            guard let colon = text.lastIndex(of: ":") else { return fail("\(form), got \(quoted(text))") }
            host = text[..<colon]
            port = text[text.index(after: colon)...]
            if host.contains(":") { return fail("IPv6 addresses must be in brackets, e.g. [::1]:9466, got \(quoted(text))") }
            if host.isEmpty { return fail("the host is missing (use 0.0.0.0:\(port) for all interfaces), got \(quoted(text))") }
            guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-") }) else {
                return fail("invalid host in \(quoted(text))")
            }
        }
        guard !port.isEmpty, port.count <= 5, port.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int(port), (1...65535).contains(number) else {
            return fail("the port must be a number from 1 to 65535, got \(quoted(text))")
        }
        return .success((String(host), number))
    }
}
