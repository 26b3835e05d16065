import Foundation
import Hummingbird
public import Logging
public import Prometheus
public import ReplicationCore
public import ServiceLifecycle

/// The daemon's HTTP endpoint (docs/metrics.md): `/metrics`, `/lag`, `/health/live`,
/// `/health/ready` and its alias `/health/deep`. Read-only: every handler renders a
/// ``ReplicationStatus`` snapshot, nothing changes state.
///
/// A swift-service-lifecycle `Service` around a Hummingbird `Application`: it listens until the
/// service group shuts down (graceful shutdown closes the listener, lets in-flight requests
/// finish, then returns).
public struct HTTPService: Service {
    let host: String
    let port: Int
    let routes: HTTPRoutes
    let logger: Logger
    let onListening: @Sendable (_ port: Int) async -> Void

    /// - Parameters:
    ///   - listen: host (IPv6 without brackets) and port to bind, from `http.listen`; port 0
    ///     binds any free port (reported to `onListening`).
    ///   - status: the shared status every response is rendered from.
    ///   - metrics: each region's metric handles; `/metrics` publishes a fresh snapshot to them
    ///     before rendering, so lag figures are current at scrape time.
    ///   - registry: the registry ``MetricsSetup/bootstrap()`` returned.
    ///   - logger: for start-up and warnings.
    ///   - redact: applied to every error string a response carries (a second line of defence:
    ///     the status's problem strings hold no secrets in the first place).
    ///   - fresh: serves `/fresh` (nil: `/fresh` answers 404).
    ///   - onListening: called with the bound port once the server accepts connections.
    ///   - capture: the capture side of each capturing region (`/lag`'s `capture` objects).
    public init(listen: (host: String, port: Int), status: ReplicationStatus, metrics: [RegionMetrics],
                registry: PrometheusCollectorRegistry, capture: CaptureStatus? = nil, logger: Logger,
                redact: @escaping @Sendable (String) -> String = { $0 }, fresh: FreshService? = nil,
                onListening: @escaping @Sendable (_ port: Int) async -> Void = { _ in }) {
        self.host = listen.host
        self.port = listen.port
        self.routes = HTTPRoutes(status: status, metrics: metrics, registry: registry, capture: capture, redact: redact, fresh: fresh)
        var logger = logger
        logger[metadataKey: "loop"] = "http"
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        if !Self.isLoopback(host) {
            logger.warning("http.listen is not a loopback address: /metrics, /lag and /health have no authentication; restrict who can reach it (firewall, reverse proxy)",
                           metadata: ["listen": "\(Self.display(host, port))"])
        }
        let onListening = self.onListening
        let app = Application(
            responder: routes,
            server: .http1(configuration: .init(
                idleTimeout: .seconds(75),
                httpDecoderConfiguration: .init(maxHeaderFieldSize: 8 * 1024, maxHeaderListSize: 16 * 1024,
                                                maxHeaderFieldCount: 100))),
            configuration: .init(address: .hostname(host, port: port)),
            onServerRunning: { channel in await onListening(channel.localAddress?.port ?? 0) },
            logger: logger)
        do {
            try await app.run()
        } catch let error as CancellationError {
            throw error
        } catch {
            throw HTTPServiceError(listen: Self.display(host, port), underlying: error)
        }
    }

    static func display(_ host: String, _ port: Int) -> String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// `localhost`, 127.0.0.0/8, `::1` or an IPv4-mapped 127.x address.
    static func isLoopback(_ host: String) -> Bool {
        if host.lowercased() == "localhost" { return true }
        var v4 = in_addr()
        if inet_pton(AF_INET, host, &v4) == 1 { return UInt32(bigEndian: v4.s_addr) >> 24 == 127 }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, host, &v6) == 1 else { return false }
        let bytes = withUnsafeBytes(of: v6) { Array($0) }
        if bytes[0..<15].allSatisfy({ $0 == 0 }) && bytes[15] == 1 { return true }
        return bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xff && bytes[11] == 0xff && bytes[12] == 127
    }
}

/// The endpoint could not run (typically: `http.listen` is in use or not a local address).
struct HTTPServiceError: Error, CustomStringConvertible {
    let listen: String
    let underlying: any Error
    var description: String { "HTTP endpoint (http.listen \(listen)): \(underlying)" }
}

// MARK: - Routes

/// The request → response mapping: thin handlers over a status snapshot.
struct HTTPRoutes: HTTPResponder {
    typealias Context = BasicRequestContext

    enum Endpoint: String, CaseIterable {
        case metrics = "/metrics"
        case lag = "/lag"
        case live = "/health/live"
        case ready = "/health/ready"
        case deep = "/health/deep"
        case fresh = "/fresh"
    }

    /// No endpoint takes a body; a declared body larger than this is refused (413).
    static let maxBodyBytes = 1024

    let status: ReplicationStatus
    let metrics: [String: RegionMetrics]
    let registry: PrometheusCollectorRegistry
    let capture: CaptureStatus?
    let redact: @Sendable (String) -> String
    let fresh: FreshService?

    init(status: ReplicationStatus, metrics: [RegionMetrics], registry: PrometheusCollectorRegistry,
         capture: CaptureStatus? = nil, redact: @escaping @Sendable (String) -> String, fresh: FreshService? = nil) {
        self.fresh = fresh
        self.status = status
        self.capture = capture
        self.metrics = Dictionary(metrics.map { ($0.region, $0) }, uniquingKeysWith: { a, _ in a })
        self.registry = registry
        self.redact = redact
    }

    func respond(to request: Request, context: Context) async throws -> Response {
        var response = route(method: request.method, path: request.uri.path, headers: request.headers)
        if let fresh, request.uri.path == Endpoint.fresh.rawValue, response.status == .ok {
            response = await fresh.respond(query: request.uri.query ?? "")
        }
        return request.method == .head ? response.createHeadResponse() : response
    }

    func route(method: HTTPRequest.Method, path: String, headers: HTTPFields) -> Response {
        if let length = headers[.contentLength].flatMap({ Int($0) }), length > Self.maxBodyBytes {
            return Self.error(.contentTooLarge, "request body too large (this endpoint takes none)", extra: [.connection: "close"])
        }
        if headers[.transferEncoding] != nil {
            return Self.error(.contentTooLarge, "request bodies are not accepted", extra: [.connection: "close"])
        }
        guard let endpoint = Endpoint(rawValue: path) else {
            return Self.error(.notFound, "not found; endpoints: " + Endpoint.allCases.map(\.rawValue).joined(separator: ", "))
        }
        guard method == .get || method == .head else {
            return Self.error(.methodNotAllowed, "method \(method.rawValue) not allowed; use GET or HEAD", extra: [.allow: "GET, HEAD"])
        }
        // Taken only where the body needs it: `/fresh` does not, and takes the lock the
        // pipelines take to commit.
        switch endpoint {
        case .metrics:
            let snapshot = status.snapshot()
            for r in snapshot.regions { metrics[r.region]?.publish(r) }
            return Response(status: .ok,
                            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8", .cacheControl: "no-store"],
                            body: .init(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
        case .lag:
            return Self.json(.ok, LagDocument(status.snapshot(), capture: capture?.snapshot() ?? [:], redact: redact))
        case .live:
            let snapshot = status.snapshot()
            let ok = snapshot.stalledLoops.isEmpty
            return Self.json(ok ? .ok : .serviceUnavailable,
                             LivenessDocument(status: ok ? "ok" : "stalled", stalledLoops: snapshot.stalledLoops))
        case .ready, .deep:
            let doc = HealthDocument(status.snapshot(), redact: redact)
            return Self.json(doc.healthy ? .ok : .serviceUnavailable, doc)
        case .fresh:
            // Answered in `respond` (this is the go-ahead after the checks above).
            return fresh == nil ? Self.error(.notFound, "/fresh is not served by this process") : Response(status: .ok)
        }
    }

    static func json(_ status: HTTPResponse.Status, _ value: some Encodable) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = (try? encoder.encode(value)) ?? Data(#"{"error":"cannot encode the response"}"#.utf8)
        data.append(UInt8(ascii: "\n"))
        return Response(status: status, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func error(_ status: HTTPResponse.Status, _ message: String, extra: HTTPFields = [:]) -> Response {
        var response = json(status, ["error": message])
        response.headers.append(contentsOf: extra)
        return response
    }
}

// MARK: - Bodies

/// The `/lag` body (docs/metrics.md), also decoded by `region-replicator status`.
struct LagDocument: Codable, Sendable, Equatable {
    struct Region: Codable, Sendable, Equatable {
        var region: String
        var up: Bool
        /// Why the region is not up; null when up.
        var problem: String?
        var lagEvents: Int64
        /// Records deleted by retention before the region applied them (see `PartitionLag`).
        /// Optional only so that `status` still reads the `/lag` of an older daemon.
        var expiredEvents: Int64?
        var lagSeconds: Double
        /// RFC 3339, UTC, microseconds.
        var replicatedThrough: String
        /// The region's last committed batch since start (RFC 3339), null if none.
        var lastApply: String?
        /// When the high watermarks behind these figures were read (RFC 3339), null if never.
        var lagSampleTimestamp: String?
        var partitions: [PartitionLag]
        /// Partitions this instance owns for the region (scale-out: the others' are elsewhere).
        /// Optional only so that `status` still reads the `/lag` of an older daemon.
        var assignedPartitions: [Int32]?
        /// Records deleted from the topic before this instance applied them (since start).
        /// Optional only so that `status` still reads the `/lag` of an older daemon.
        var gone: Int64?
        /// The capture side of a capturing region; null for a region that does not capture.
        var capture: CaptureDocument? = nil

        enum CodingKeys: String, CodingKey {
            case region, up, problem, partitions, gone, capture
            case assignedPartitions = "assigned_partitions"
            case lagEvents = "lag_events"
            case expiredEvents = "expired_events"
            case lagSeconds = "lag_seconds"
            case replicatedThrough = "replicated_through"
            case lastApply = "last_apply"
            case lagSampleTimestamp = "lag_sample_timestamp"
        }

        // Optional keys are written as null rather than left out: a fixed shape for jq and dashboards.
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(region, forKey: .region)
            try c.encode(up, forKey: .up)
            try c.encode(problem, forKey: .problem)
            try c.encode(lagEvents, forKey: .lagEvents)
            try c.encode(expiredEvents ?? 0, forKey: .expiredEvents)
            try c.encode(lagSeconds, forKey: .lagSeconds)
            try c.encode(replicatedThrough, forKey: .replicatedThrough)
            try c.encode(lastApply, forKey: .lastApply)
            try c.encode(lagSampleTimestamp, forKey: .lagSampleTimestamp)
            try c.encode(partitions, forKey: .partitions)
            try c.encode(assignedPartitions ?? [], forKey: .assignedPartitions)
            try c.encode(gone ?? 0, forKey: .gone)
            try c.encode(capture, forKey: .capture)
        }
    }

    var topic: String
    /// "ok", or why Kafka is not reachable.
    var kafka: String
    var regions: [Region]

    init(topic: String, kafka: String, regions: [Region]) {
        self.topic = topic
        self.kafka = kafka
        self.regions = regions
    }

    init(_ s: ReplicationSnapshot, capture: [String: CaptureRegionStatus] = [:], redact: (String) -> String) {
        topic = s.topic
        kafka = s.kafkaOK ? "ok" : redact(s.kafkaProblem ?? "not reachable")
        regions = s.regions.map { r in
            let lag = r.lagSeconds.isFinite ? (r.lagSeconds * 1000).rounded() / 1000 : 0
            return Region(region: r.region, up: r.up, problem: r.problem.map(redact), lagEvents: r.lagEvents,
                          expiredEvents: r.expiredEvents, lagSeconds: lag, replicatedThrough: Self.rfc3339(r.replicatedThrough),
                          lastApply: r.lastApply.map(Self.rfc3339), lagSampleTimestamp: r.sampledAt.map(Self.rfc3339),
                          partitions: r.partitions, assignedPartitions: r.assignedPartitions, gone: r.gone,
                          capture: capture[r.region].map { CaptureDocument($0, redact: redact) })
        }
    }

    static func rfc3339(_ unix: Double) -> String { Timestamp.fromSeconds(unix).rfc3339 }
}

/// The `/health/ready` and `/health/deep` body: "ok" or the error, per component.
struct HealthDocument: Codable, Sendable, Equatable {
    var kafka: String
    var regions: [String: String]

    var healthy: Bool { kafka == "ok" && regions.values.allSatisfy { $0 == "ok" } }

    init(_ s: ReplicationSnapshot, redact: (String) -> String) {
        kafka = s.kafkaOK ? "ok" : redact(s.kafkaProblem ?? "not reachable")
        regions = Dictionary(s.regions.map { r in
            (r.region, r.up ? "ok" : redact(r.problem ?? "pipeline not connected yet"))
        }, uniquingKeysWith: { a, _ in a })
    }
}

/// The `/health/live` body.
struct LivenessDocument: Codable, Sendable, Equatable {
    var status: String
    /// `region/loop` names of the loops that missed their heartbeat.
    var stalledLoops: [String]

    enum CodingKeys: String, CodingKey {
        case status
        case stalledLoops = "stalled_loops"
    }
}
