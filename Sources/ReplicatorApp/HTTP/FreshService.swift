import Foundation
import Hummingbird
import Metrics
public import ReplicationCore

/// `GET /fresh` (docs/metrics.md): may a session be served from a region now?
///
/// `region=R` (optional: without it, every region's answer), `wait_ms=N` (optional, default 0,
/// cut to `http.fresh_max_wait_ms`), `token=T` (optional: a session token of the reference
/// producer; then only that write counts). 200 when fresh; 503 when not (the body says what the
/// region lacks); 400 for a malformed query or a token of another cluster or topic; 404 for a
/// region that is not configured; 429 when `http.fresh_max_waiters` requests wait already.
public struct FreshService: Sendable {
    public static let metricName = "region_replicator_fresh_requests_total"

    let oracle: FreshOracle
    let maxWaitMs: Int
    let redact: @Sendable (String) -> String
    /// The request counters by region and result, made once: making a counter per request
    /// (a registry lookup by label and dimensions) cost more than answering it.
    let counters: [String: [String: Counter]]

    /// - Parameter redact: applied to every problem string an answer carries.
    public init(oracle: FreshOracle, maxWaitMs: Int, redact: @escaping @Sendable (String) -> String = { $0 }) {
        self.oracle = oracle
        self.maxWaitMs = maxWaitMs
        self.redact = redact
        var counters: [String: [String: Counter]] = [:]
        for region in oracle.regionNames {
            for result in ["fresh", "not_fresh", "refused"] {
                let counter = Counter(label: Self.metricName, dimensions: [("region", region), ("result", result)])
                counter.increment(by: 0)
                counters[region, default: [:]][result] = counter
            }
        }
        self.counters = counters
    }

    struct Query {
        var region: String?
        var waitMs: Int = 0
        var token: FreshToken?
        /// A capturing region's local write (a version-2 token).
        var captureToken: FreshCaptureToken?
    }

    /// Parses the query string; hostile text gives a reason, never a trap.
    static func parse(_ query: String, maxWaitMs: Int) -> Result<Query, FreshQueryError> {
        var q = Query()
        var seen: Set<String> = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            var value = String(parts.count > 1 ? parts[1] : "")
            // Foundation's decoding only where there is something to decode (tokens and region
            // names seldom need it; it cost a measurable share of a request).
            if value.utf8.contains(UInt8(ascii: "+")) { value = value.replacingOccurrences(of: "+", with: " ") }
            if value.utf8.contains(UInt8(ascii: "%")) {
                guard let decoded = value.removingPercentEncoding else {
                    return .failure(.init("\(name): not percent-encoded text"))
                }
                value = decoded
            }
            guard seen.insert(name).inserted else { return .failure(.init("\(name) is given twice")) }
            switch name {
            case "region": q.region = value
            case "wait_ms":
                guard let n = Int(value), n >= 0 else { return .failure(.init("wait_ms: expected a whole number of milliseconds ≥ 0")) }
                q.waitMs = min(n, maxWaitMs)
            case "token":
                if let c = try? FreshCaptureToken(encoded: value) {
                    q.captureToken = c
                } else {
                    do { q.token = try FreshToken(encoded: value) } catch { return .failure(.init("token: \(error)")) }
                }
            default:
                return .failure(.init("unknown parameter \(name) (region, wait_ms, token)"))
            }
        }
        return .success(q)
    }

    struct FreshQueryError: Error {
        var message: String
        init(_ m: String) { message = m }
    }

    func respond(query: String) async -> Response {
        let q: Query
        switch Self.parse(query, maxWaitMs: maxWaitMs) {
        case .success(let parsed): q = parsed
        case .failure(let e): return HTTPRoutes.error(.badRequest, e.message)
        }
        let wait = Duration.milliseconds(q.waitMs)
        if let region = q.region {
            guard var answer = await oracle.ask(region: region, token: q.token, captureToken: q.captureToken, wait: wait) else {
                return HTTPRoutes.error(.notFound, "region \(region) is not configured; regions: " + oracle.regionNames.joined(separator: ", "))
            }
            count(answer)
            answer.problem = answer.problem.map(redact)
            return Self.response(Self.status(of: [answer]), FreshDocument.Region(answer).json())
        }
        let answers = await withTaskGroup(of: FreshAnswer?.self) { group in
            for name in oracle.regionNames { group.addTask { await oracle.ask(region: name, token: q.token, captureToken: q.captureToken, wait: wait) } }
            var all: [FreshAnswer] = []
            for await a in group { if let a { all.append(a) } }
            return all
        }
        answers.forEach(count)
        let shown = answers.map { a in
            var a = a
            a.problem = a.problem.map(redact)
            return a
        }
        return Self.response(Self.status(of: answers), FreshDocument(shown).json())
    }

    /// The body as ``HTTPRoutes/json(_:_:)`` sends it, encoded by hand (JSONEncoder was a
    /// measurable share of a request that is asked 1,000 times a second).
    static func response(_ status: HTTPResponse.Status, _ body: [UInt8]) -> Response {
        Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                 body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func status(of answers: [FreshAnswer]) -> HTTPResponse.Status {
        if answers.contains(where: { $0.reason == .foreignToken }) { return .badRequest }
        if answers.contains(where: { $0.reason == .overloaded }) { return .tooManyRequests }
        return answers.allSatisfy(\.fresh) ? .ok : .serviceUnavailable
    }

    func count(_ a: FreshAnswer) {
        let result = a.fresh ? "fresh" : (a.reason == .overloaded || a.reason == .foreignToken ? "refused" : "not_fresh")
        if let counter = counters[a.region]?[result] {
            counter.increment()
        } else {
            Counter(label: Self.metricName, dimensions: [("region", a.region), ("result", result)]).increment()
        }
    }
}

/// The `/fresh` body (docs/metrics.md), also decoded by `region-replicator status`.
struct FreshDocument: Codable, Sendable, Equatable {
    struct Region: Codable, Sendable, Equatable {
        var region: String
        var fresh: Bool
        var waitedMs: Int64
        /// Null when fresh.
        var reason: String?
        var problem: String?
        /// Partition (decimal text) → events the region lacks.
        var missing: [String: Int64]
        var token: Bool

        enum CodingKeys: String, CodingKey {
            case region, fresh, reason, problem, missing, token
            case waitedMs = "waited_ms"
        }

        init(_ a: FreshAnswer) {
            region = a.region
            fresh = a.fresh
            waitedMs = a.waitedMs
            reason = a.reason?.rawValue
            problem = a.problem
            missing = Dictionary(uniqueKeysWithValues: a.missing.map { (String($0.key), $0.value) })
            token = a.token
        }

        /// What `JSONEncoder` with sorted keys and unescaped slashes writes, and a newline.
        func json() -> [UInt8] {
            var out = JSONText()
            write(to: &out)
            out.raw("\n")
            return out.bytes
        }

        /// The object, keys in `JSONEncoder`'s sorted order.
        func write(to out: inout JSONText) {
            out.raw(#"{"fresh":"#)
            out.raw(fresh ? "true" : "false")
            out.raw(#","missing":{"#)
            for (i, p) in missing.keys.sorted().enumerated() {
                if i > 0 { out.raw(",") }
                out.string(p)
                out.raw(":\(missing[p]!)")
            }
            out.raw(#"},"problem":"#)
            out.optional(problem)
            out.raw(#","reason":"#)
            out.optional(reason)
            out.raw(#","region":"#)
            out.string(region)
            out.raw(#","token":"#)
            out.raw(token ? "true" : "false")
            out.raw(#","waited_ms":\#(waitedMs)}"#)
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(region, forKey: .region)
            try c.encode(fresh, forKey: .fresh)
            try c.encode(waitedMs, forKey: .waitedMs)
            try c.encode(reason, forKey: .reason)
            try c.encode(problem, forKey: .problem)
            try c.encode(missing, forKey: .missing)
            try c.encode(token, forKey: .token)
        }
    }

    var fresh: Bool
    var regions: [String: Region]

    /// What `JSONEncoder` with sorted keys and unescaped slashes writes, and a newline.
    func json() -> [UInt8] {
        var out = JSONText()
        out.raw(#"{"fresh":"#)
        out.raw(fresh ? "true" : "false")
        out.raw(#","regions":{"#)
        for (i, name) in regions.keys.sorted().enumerated() {
            if i > 0 { out.raw(",") }
            out.string(name)
            out.raw(":")
            regions[name]!.write(to: &out)
        }
        out.raw("}}\n")
        return out.bytes
    }

    init(_ answers: [FreshAnswer]) {
        fresh = answers.allSatisfy(\.fresh)
        regions = Dictionary(answers.map { ($0.region, Region($0)) }, uniquingKeysWith: { a, _ in a })
    }
}

/// JSON text written by hand, escaped as `JSONEncoder` escapes (`"`, `\\`, and control
/// characters; `/` and non-ASCII left as they are).
struct JSONText {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(192) }

    mutating func raw(_ s: String) { bytes.append(contentsOf: s.utf8) }

    mutating func optional(_ s: String?) {
        if let s { string(s) } else { raw("null") }
    }

    mutating func string(_ s: String) {
        bytes.append(UInt8(ascii: "\""))
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "\""): raw(#"\""#)
            case UInt8(ascii: "\\"): raw(#"\\"#)
            case 0x08: raw(#"\b"#)
            case 0x0C: raw(#"\f"#)
            case 0x0A: raw(#"\n"#)
            case 0x0D: raw(#"\r"#)
            case 0x09: raw(#"\t"#)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                raw(#"\u00"#)
                bytes.append(hex[Int(b >> 4)])
                bytes.append(hex[Int(b & 0xF)])
            default: bytes.append(b)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
