import ArgumentParser
import Foundation
import Logging
import ReplicationCore
import ServiceLifecycle
import Testing

@testable import ReplicatorApp

/// The HTTP endpoint of docs/metrics.md on a real socket (127.0.0.1, a free port), rendering a
/// hand-fed ``ReplicationStatus``. Metrics go through the one process-wide Prometheus bootstrap;
/// every test uses its own region names, so their series never mix.
@Suite("HTTP endpoint")
struct HTTPServiceTests {
    static let registry = MetricsSetup.bootstrap()

    // MARK: - Harness

    /// Runs an ``HTTPService`` on 127.0.0.1 port 0 for the duration of `body`.
    func withServer(_ status: ReplicationStatus, metrics: [RegionMetrics] = [],
                    redact: @escaping @Sendable (String) -> String = { $0 },
                    _ body: @Sendable (_ port: Int) async throws -> Void) async throws {
        let (ports, continuation) = AsyncStream.makeStream(of: Int.self)
        var logger = Logger(label: "http-test")
        logger.logLevel = .warning
        let service = HTTPService(listen: ("127.0.0.1", 0), status: status, metrics: metrics, registry: Self.registry,
                                  logger: logger, redact: redact, onListening: { continuation.yield($0) })
        // Stopped the way the daemon stops it: a graceful shutdown of its service group.
        let services = ServiceGroup(configuration: .init(services: [service], logger: logger))
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { continuation.finish() }
                try await services.run()
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else {
                try await group.next()
                throw TestFailure("the HTTP service stopped before listening")
            }
            #expect(port > 0)
            let result: Result<Void, any Error>
            do { result = .success(try await body(port)) } catch { result = .failure(error) }
            await services.triggerGracefulShutdown()
            try await group.waitForAll()
            try result.get()
        }
    }

    func request(_ port: Int, _ path: String, method: String = "GET", headers: [(String, String)] = [],
                 body: [UInt8] = []) async throws -> PlainHTTP.Response {
        try await BlockingThread.run(name: "http-test-client") {
            try PlainHTTP.perform(.init(method: method, host: "127.0.0.1", port: port, path: path, timeout: .seconds(10),
                                        headers: headers, body: body))
        }
    }

    func json(_ r: PlainHTTP.Response) throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(r.body))
        return try #require(object as? [String: Any], "not a JSON object: \(r.text)")
    }

    static var now: Double { Date().timeIntervalSince1970 }

    /// Two regions, both up, Kafka reachable: `<prefix>-a` 5 events behind (partition 0: next 5,
    /// high 10, oldest unapplied record produced `behindSeconds` ago), `<prefix>-b` caught up.
    func fedStatus(_ prefix: String, behindSeconds: Double = 2.5) -> (ReplicationStatus, a: String, b: String) {
        let a = "\(prefix)-a", b = "\(prefix)-b"
        let s = ReplicationStatus(topic: "chat.messages", regions: [a, b])
        let now = Self.now
        for r in [a, b] {
            s.pipelineDatabase(region: r, connected: true, problem: nil)
            s.heartbeat(region: r, loop: "pipeline", timeout: .seconds(60))
        }
        s.storedOffsets(region: a, [0: 5, 1: 3], problem: nil)
        s.storedOffsets(region: b, [0: 10, 1: 3], problem: nil)
        // Retention deleted offsets 0–6 of partition 0: 2 of them (5, 6) before `a` applied them.
        s.watermarks(region: a, [0: 10, 1: 3], low: [0: 7, 1: 0], at: now)
        s.watermarks(region: b, [0: 10, 1: 3], at: now)
        s.oldestUnapplied(region: a, partition: 0, offset: 5, timestampMs: Int64((now - behindSeconds) * 1000), at: now)
        s.recordsGone(region: b, count: 7)
        return (s, a, b)
    }

    // MARK: - /lag

    @Test("/lag is the JSON of docs/metrics.md, with figures computed at request time")
    func lagBody() async throws {
        let (status, a, b) = fedStatus("lag")
        try await withServer(status) { port in
            let before = Self.now
            let r = try await request(port, "/lag")
            #expect(r.status == 200)
            #expect(r.header("content-type") == "application/json")
            let body = try json(r)
            #expect(body["topic"] as? String == "chat.messages")
            #expect(body["kafka"] as? String == "ok")
            let regions = try #require(body["regions"] as? [[String: Any]])
            #expect(regions.map { $0["region"] as? String } == [a, b])

            let ra = regions[0]
            #expect(ra["up"] as? Bool == true)
            #expect((ra["lag_events"] as? NSNumber)?.int64Value == 5)
            let lagSeconds = try #require((ra["lag_seconds"] as? NSNumber)?.doubleValue)
            #expect(lagSeconds >= 2.5 && lagSeconds < 10, "lag_seconds \(lagSeconds)")
            let through = try #require(ra["replicated_through"] as? String)
            #expect(through.hasSuffix("Z"))
            let throughUnix = try #require(Timestamp(rfc3339: through)).microseconds
            #expect(abs(Double(throughUnix) / 1e6 - (before - lagSeconds)) < 2, "replicated_through \(through)")
            #expect(ra["problem"] is NSNull)
            #expect(ra["capture"] is NSNull, "a region that does not capture has a null capture object")
            let parts = try #require(ra["partitions"] as? [[String: Any]])
            #expect(parts.count == 2)
            #expect(Set(parts[0].keys) == ["partition", "next_offset", "high_watermark", "lag_events", "low_watermark", "expired_events"])
            #expect((parts[0]["low_watermark"] as? NSNumber)?.intValue == 7)
            #expect((parts[0]["expired_events"] as? NSNumber)?.intValue == 2)
            #expect((parts[1]["expired_events"] as? NSNumber)?.intValue == 0)
            #expect((ra["expired_events"] as? NSNumber)?.intValue == 2)
            #expect((parts[0]["partition"] as? NSNumber)?.intValue == 0)
            #expect((parts[0]["next_offset"] as? NSNumber)?.intValue == 5)
            #expect((parts[0]["high_watermark"] as? NSNumber)?.intValue == 10)
            #expect((parts[0]["lag_events"] as? NSNumber)?.intValue == 5)
            #expect((parts[1]["lag_events"] as? NSNumber)?.intValue == 0)
            #expect(ra["lag_sample_timestamp"] is String)

            let rb = regions[1]
            #expect((rb["lag_events"] as? NSNumber)?.intValue == 0)
            #expect((rb["expired_events"] as? NSNumber)?.intValue == 0)
            #expect((ra["gone"] as? NSNumber)?.intValue == 0)
            #expect((rb["gone"] as? NSNumber)?.intValue == 7, "records gone from the topic before they were applied")
            #expect((rb["lag_seconds"] as? NSNumber)?.doubleValue == 0)

            // The same document decodes into the type `status` reads.
            let doc = try JSONDecoder().decode(LagDocument.self, from: Data(r.body))
            #expect(doc.regions.map(\.lagEvents) == [5, 0])

            // Time passes with no new input: the lag grows (computed at request time).
            try await Task.sleep(for: .milliseconds(1100))
            let later = try JSONDecoder().decode(LagDocument.self, from: Data(try await request(port, "/lag").body))
            #expect(later.regions[0].lagSeconds >= lagSeconds + 1)
        }
    }

    @Test("/lag of a region whose database is down says so, and its lag keeps growing")
    func lagOfDownRegion() async throws {
        let (status, a, _) = fedStatus("down", behindSeconds: 4)
        status.storedOffsets(region: a, nil, problem: "database unreachable: connection refused")
        try await withServer(status) { port in
            let doc = try JSONDecoder().decode(LagDocument.self, from: Data(try await request(port, "/lag").body))
            let ra = try #require(doc.regions.first { $0.region == a })
            #expect(!ra.up)
            #expect(ra.problem == "database unreachable: connection refused")
            #expect(ra.lagEvents == 5)
            #expect(ra.lagSeconds >= 4)
        }
    }

    // MARK: - Health

    @Test("/health/ready and /health/deep: 200 with every component ok, else 503 naming the failure")
    func readiness() async throws {
        let (status, a, b) = fedStatus("ready")
        try await withServer(status) { port in
            for path in ["/health/ready", "/health/deep"] {
                let r = try await request(port, path)
                #expect(r.status == 200, "\(path): \(r.text)")
                #expect(r.text == #"{"kafka":"ok","regions":{"\#(a)":"ok","\#(b)":"ok"}}"# + "\n")
            }

            status.storedOffsets(region: b, nil, problem: "database unreachable: could not connect to server")
            for path in ["/health/ready", "/health/deep"] {
                let r = try await request(port, path)
                #expect(r.status == 503)
                let body = try json(r)
                #expect(body["kafka"] as? String == "ok")
                #expect(body["regions"] as? [String: String] == [a: "ok", b: "database unreachable: could not connect to server"])
            }

            status.kafkaFailed(region: a, problem: "all brokers are down")
            let r = try await request(port, "/health/ready")
            #expect(r.status == 503)
            #expect(try json(r)["kafka"] as? String == "all brokers are down")

            // Recovery: 200 again.
            status.storedOffsets(region: b, [0: 10, 1: 3], problem: nil)
            status.watermarks(region: a, [0: 10, 1: 3], at: Self.now)
            #expect(try await request(port, "/health/ready").status == 200)
        }
    }

    @Test("/health/ready is 503 until a region's pipeline has connected once")
    func notReadyBeforeConnecting() async throws {
        let s = ReplicationStatus(topic: "t", regions: ["early-a"])
        try await withServer(s) { port in
            let r = try await request(port, "/health/ready")
            #expect(r.status == 503)
            let body = try json(r)
            #expect(body["kafka"] as? String == "not reached yet")
            #expect((body["regions"] as? [String: String])?["early-a"] != "ok")
        }
    }

    @Test("The redactor applies to every error string a response carries")
    func redaction() async throws {
        let (status, a, _) = fedStatus("redact")
        status.storedOffsets(region: a, nil, problem: "database unreachable: password=hunter2 rejected")
        status.kafkaFailed(region: a, problem: "sasl token hunter2 refused")
        try await withServer(status, redact: { $0.replacingOccurrences(of: "hunter2", with: "<redacted>") }) { port in
            for path in ["/health/ready", "/health/deep", "/lag"] {
                let r = try await request(port, path)
                #expect(!r.text.contains("hunter2"), "\(path): \(r.text)")
                #expect(r.text.contains("<redacted>"), "\(path): \(r.text)")
            }
        }
    }

    @Test("/health/live is 200 while every loop reports, 503 naming the stalled ones")
    func liveness() async throws {
        let (status, a, _) = fedStatus("live")
        try await withServer(status) { port in
            let ok = try await request(port, "/health/live")
            #expect(ok.status == 200)
            #expect(try json(ok)["status"] as? String == "ok")

            status.heartbeat(region: a, loop: "lag-monitor", timeout: .milliseconds(1))
            try await Task.sleep(for: .milliseconds(20))
            let stalled = try await request(port, "/health/live")
            #expect(stalled.status == 503)
            #expect(try json(stalled)["stalled_loops"] as? [String] == ["\(a)/lag-monitor"])

            status.heartbeat(region: a, loop: "lag-monitor", timeout: .seconds(60))
            #expect(try await request(port, "/health/live").status == 200)
        }
    }

    // MARK: - Methods, unknown paths, bodies

    @Test("Unknown paths are 404; other methods than GET and HEAD are 405 with Allow; HEAD has no body")
    func methodsAndPaths() async throws {
        let (status, _, _) = fedStatus("methods")
        try await withServer(status) { port in
            for path in ["/", "/nope", "/metrics/", "/health", "/health/", "/lag/x", "/LAG"] {
                let r = try await request(port, path)
                #expect(r.status == 404, "GET \(path) → \(r.status)")
                #expect(try json(r)["error"] is String)
            }
            for path in ["/metrics", "/lag", "/health/live", "/health/ready", "/health/deep"] {
                for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
                    let r = try await request(port, path, method: method)
                    #expect(r.status == 405, "\(method) \(path) → \(r.status)")
                    #expect(r.header("allow") == "GET, HEAD")
                }
                let get = try await request(port, path)
                let head = try await request(port, path, method: "HEAD")
                #expect(head.status == get.status, "HEAD \(path)")
                #expect(head.body.isEmpty)
                #expect(head.header("content-type") == get.header("content-type"))
                #expect(Int(head.header("content-length") ?? "") ?? 0 > 0)
            }
            // Exactly the GET body's length (a body that does not change between the two calls).
            let get = try await request(port, "/health/ready")
            let head = try await request(port, "/health/ready", method: "HEAD")
            #expect(head.header("content-length") == String(get.body.count))

            let notFoundHead = try await request(port, "/nope", method: "HEAD")
            #expect(notFoundHead.status == 404)
            #expect(notFoundHead.body.isEmpty)
            // A query string does not change the route.
            #expect(try await request(port, "/lag?pretty=1").status == 200)
        }
    }

    @Test("A request body over 1 KiB is refused with 413; a small one is ignored")
    func bodyLimit() async throws {
        let (status, _, _) = fedStatus("body")
        try await withServer(status) { port in
            let big = try await request(port, "/lag", body: [UInt8](repeating: 0x61, count: 4096))
            #expect(big.status == 413)
            let post = try await request(port, "/metrics", method: "POST", body: [UInt8](repeating: 0x61, count: 100_000))
            #expect(post.status == 413)
            let small = try await request(port, "/lag", body: Array("{}".utf8))
            #expect(small.status == 200)
        }
    }

    @Test("A chunked body is refused with 413; an oversized header block is refused before any handler runs")
    func chunkedBodiesAndHugeHeaders() async throws {
        let (status, _, _) = fedStatus("limits")
        try await withServer(status) { port in
            // Refused on the head alone: the chunks need not even be sent.
            let chunked = try await request(port, "/lag", method: "POST", headers: [("Transfer-Encoding", "chunked")])
            #expect(chunked.status == 413)
            // 64 KiB in one header field, over the 8 KiB limit: an error status or a closed connection.
            let huge = try? await request(port, "/lag", headers: [("X-Filler", String(repeating: "a", count: 64 * 1024))])
            #expect(huge == nil || huge!.status >= 400, "a 64 KiB header was served: \(huge?.status ?? 0)")
            // The server is still there afterwards.
            #expect(try await request(port, "/lag").status == 200)
        }
    }

    // MARK: - /metrics

    /// `series → value` from a text exposition, e.g. `name{region="a",outcome="applied"}` → 0.
    func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = v
        }
        return out
    }

    @Test("/metrics exports every series of every region from start-up, with HELP, TYPE and current lag")
    func metricsExposition() async throws {
        // The backend first: handles made before the bootstrap go to the no-op backend (the
        // test failed when it ran before every other test that touches the registry).
        _ = Self.registry
        let (status, a, b) = fedStatus("metrics", behindSeconds: 3)
        // Bootstrap the metrics backend before any handle is made: handles made earlier go to
        // the no-op backend (this test failed whenever it happened to run first).
        _ = Self.registry
        let metrics = [RegionMetrics(region: a), RegionMetrics(region: b)]
        try await withServer(status, metrics: metrics) { port in
            let r = try await request(port, "/metrics")
            #expect(r.status == 200)
            #expect(r.header("content-type") == "text/plain; version=0.0.4; charset=utf-8")
            let text = r.text
            let s = samples(text)
            for region in [a, b] {
                for outcome in ["applied", "duplicate", "stale", "skipped_origin", "dead_lettered", "gone"] {
                    #expect(s[#"region_replicator_events_total{region="\#(region)",outcome="\#(outcome)"}"#] == 0,
                            "events_total \(region) \(outcome)")
                }
                #expect(s[#"region_replicator_apply_retries_total{region="\#(region)"}"#] == 0)
                for h in ["region_replicator_apply_latency_seconds", "region_replicator_batch_duration_seconds"] {
                    #expect(s[#"\#(h)_count{region="\#(region)"}"#] == 0)
                    #expect(s[#"\#(h)_sum{region="\#(region)"}"#] == 0)
                    for le in ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0",
                               "10.0", "30.0", "60.0", "+Inf"] {
                        #expect(s[#"\#(h)_bucket{region="\#(region)",le="\#(le)"}"#] == 0, "\(h) le=\(le)")
                    }
                }
                #expect(s[#"region_replicator_region_up{region="\#(region)"}"#] == 1)
                for g in ["last_apply_timestamp_seconds", "lag_sample_timestamp_seconds", "replicated_through_timestamp_seconds",
                          "lag_events", "lag_seconds"] {
                    #expect(s[#"region_replicator_\#(g){region="\#(region)"}"#] != nil, "\(g) \(region)")
                }
            }
            // Published at scrape time (no lag monitor runs here).
            #expect(s[#"region_replicator_lag_events{region="\#(a)"}"#] == 5)
            #expect((s[#"region_replicator_lag_seconds{region="\#(a)"}"#] ?? 0) >= 3)
            #expect(s[#"region_replicator_lag_seconds{region="\#(b)"}"#] == 0)
            #expect(s[#"region_replicator_partition_lag_events{region="\#(a)",partition="0"}"#] == 5)
            #expect(s[#"region_replicator_partition_lag_events{region="\#(a)",partition="1"}"#] == 0)
            let sampled = try #require(s[#"region_replicator_lag_sample_timestamp_seconds{region="\#(a)"}"#])
            #expect(abs(sampled - Self.now) < 60)
            let through = try #require(s[#"region_replicator_replicated_through_timestamp_seconds{region="\#(a)"}"#])
            #expect(through < Self.now - 2.9 && through > Self.now - 60)
            #expect(s[#"region_replicator_build_info{version="\#(replicatorVersion)"}"#] == 1)

            // One HELP and one TYPE per family.
            for (name, type) in [("region_replicator_events_total", "counter"), ("region_replicator_lag_seconds", "gauge"),
                                 ("region_replicator_apply_latency_seconds", "histogram"), ("region_replicator_build_info", "gauge")] {
                #expect(text.components(separatedBy: "# TYPE \(name) \(type)\n").count == 2, "TYPE of \(name)")
                #expect(text.components(separatedBy: "# HELP \(name) ").count == 2, "HELP of \(name)")
            }

            // Region down: region_up follows at the next scrape.
            status.storedOffsets(region: b, nil, problem: "database unreachable")
            let down = samples(try await request(port, "/metrics").text)
            #expect(down[#"region_replicator_region_up{region="\#(b)"}"#] == 0)
        }
    }

    @Test("Every duration bucket from 1 ms to 60 s is configured")
    func buckets() {
        #expect(MetricsSetup.durationBuckets.first == .milliseconds(1))
        #expect(MetricsSetup.durationBuckets.last == .seconds(60))
        #expect(MetricsSetup.durationBuckets == MetricsSetup.durationBuckets.sorted())
        #expect(MetricsSetup.bootstrap() === Self.registry)
    }

    // MARK: - Listen address

    @Test("Loopback detection for the non-loopback warning", arguments: [
        ("127.0.0.1", true), ("127.10.0.3", true), ("::1", true), ("localhost", true), ("::ffff:127.0.0.1", true),
        ("0.0.0.0", false), ("::", false), ("10.0.0.5", false), ("192.168.1.1", false), ("fe80::1", false),
        ("example.com", false), ("128.0.0.1", false),
    ])
    func loopback(host: String, expected: Bool) {
        #expect(HTTPService.isLoopback(host) == expected, "\(host)")
    }

    @Test("A port already in use makes run() throw (the daemon then stops with an error)")
    func bindFailure() async throws {
        let (status, _, _) = fedStatus("bind")
        try await withServer(status) { port in
            let second = HTTPService(listen: ("127.0.0.1", port), status: status, metrics: [], registry: Self.registry,
                                     logger: Logger(label: "http-test"))
            let error = await #expect(throws: HTTPServiceError.self) { try await second.run() }
            #expect(error?.description.contains("http.listen 127.0.0.1:\(port)") == true, "\(String(describing: error))")
        }
    }

    // MARK: - status

    @Test("`status` renders the per-region table, with the problems of down regions below it")
    func statusTable() {
        let sampled = "2026-11-24T10:00:01.000000Z"
        let doc = LagDocument(topic: "chat.messages", kafka: "ok", regions: [
            .init(region: "eu-west-1", up: true, problem: nil, lagEvents: 0, lagSeconds: 0,
                  replicatedThrough: "2026-11-24T10:00:00.000000Z", lastApply: nil, lagSampleTimestamp: sampled, partitions: []),
            .init(region: "ap-southeast-1", up: false, problem: "database unreachable: connection refused", lagEvents: 12345,
                  lagSeconds: 73.25, replicatedThrough: "2026-11-24T09:58:46.750000Z", lastApply: nil, lagSampleTimestamp: sampled,
                  partitions: [], gone: 40),
        ])
        #expect(Status.render(doc) == """
            REGION          UP   LAG EVENTS  LAG SECONDS  REPLICATED THROUGH
            eu-west-1       yes           0        0.000  2026-11-24T10:00:00.000000Z
            ap-southeast-1  NO        12345       73.250  2026-11-24T09:58:46.750000Z

            ap-southeast-1: database unreachable: connection refused

            ap-southeast-1: 40 records gone from the topic (retention) before they were applied

            """)
    }

    @Test("`status` renders a capture table for capturing regions, naming a standing-by instance and a lost slot; /lag's capture object round-trips")
    func statusCaptureTable() throws {
        let sampled = "2026-11-24T10:00:01.000000Z"
        func region(_ name: String, _ capture: CaptureDocument?) -> LagDocument.Region {
            .init(region: name, up: true, problem: nil, lagEvents: 0, lagSeconds: 0, replicatedThrough: "2026-11-24T10:00:00.000000Z",
                  lastApply: nil, lagSampleTimestamp: sampled, partitions: [], capture: capture)
        }
        let doc = LagDocument(topic: "chat.messages", kafka: "ok", regions: [
            region("us-east-1", CaptureDocument(slot: "rr_us_east_1", streaming: true, problem: nil, confirmedLSN: "0/1A2B3C8", slotActive: true,
                                                walStatus: "reserved", retainedWALBytes: 16384, slotSampledAt: sampled,
                                                lastAcknowledgedCommit: "2026-11-24T10:00:00.950000Z", eventsCaptured: 812, eventsPublished: 812)),
            region("eu-west-1", CaptureDocument(slot: "rr_eu_west_1", streaming: false, problem: "standing by: replication slot \"rr_eu_west_1\" is active for PID 4242",
                                                confirmedLSN: nil, slotActive: true, walStatus: "reserved", retainedWALBytes: 1_288_490_189,
                                                slotSampledAt: sampled, lastAcknowledgedCommit: nil, eventsCaptured: 0, eventsPublished: 0)),
            region("ap-southeast-1", CaptureDocument(slot: "rr_ap_southeast_1", streaming: false, problem: "replication slot rr_ap_southeast_1 was invalidated",
                                                     confirmedLSN: nil, slotActive: false, walStatus: "lost", retainedWALBytes: nil,
                                                     slotSampledAt: sampled, lastAcknowledgedCommit: nil, eventsCaptured: 0, eventsPublished: 0)),
            region("sa-east-1", nil),
        ])
        #expect(Status.render(doc) == """
            REGION          UP   LAG EVENTS  LAG SECONDS  REPLICATED THROUGH
            us-east-1       yes           0        0.000  2026-11-24T10:00:00.000000Z
            eu-west-1       yes           0        0.000  2026-11-24T10:00:00.000000Z
            ap-southeast-1  yes           0        0.000  2026-11-24T10:00:00.000000Z
            sa-east-1       yes           0        0.000  2026-11-24T10:00:00.000000Z

            CAPTURE         STREAMING  WAL STATUS  RETAINED WAL  CONFIRMED LSN  LAST ACKNOWLEDGED COMMIT     PUBLISHED
            us-east-1       yes        reserved        16.0 KiB  0/1A2B3C8      2026-11-24T10:00:00.950000Z        812
            eu-west-1       no         reserved         1.2 GiB  -              -                                    0
            ap-southeast-1  no         lost             unknown  -              -                                    0

            eu-west-1: capture: standing by: replication slot "rr_eu_west_1" is active for PID 4242
            ap-southeast-1: capture slot rr_ap_southeast_1 is LOST (invalidated): see "A capture slot is lost" in docs/operations.md

            """)
        // /lag writes every key of a capture object (null when unknown) and null for a region
        // that does not capture; `status` reads it back.
        let data = try JSONEncoder().encode(doc)
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let regions = try #require(object["regions"] as? [[String: Any]])
        #expect(regions[3]["capture"] is NSNull)
        #expect(Set((regions[1]["capture"] as? [String: Any] ?? [:]).keys) == [
            "slot", "streaming", "problem", "confirmed_lsn", "slot_active", "wal_status", "retained_wal_bytes", "slot_sampled_at",
            "last_acknowledged_commit", "events_captured", "events_published"])
        #expect(try JSONDecoder().decode(LagDocument.self, from: data).regions.map(\.capture) == doc.regions.map(\.capture))
    }

    @Test("`status` shows unknown, not 0, for figures nobody has measured yet")
    func statusTableUnmeasured() {
        // What a daemon that never reached Kafka serves: no lag sample, lag 0, replicated through "now".
        let doc = LagDocument(topic: "chat.messages", kafka: "Local: Broker transport failure", regions: [
            .init(region: "eu-west-1", up: true, problem: nil, lagEvents: 0, lagSeconds: 0,
                  replicatedThrough: "2026-11-24T10:00:00.000000Z", lastApply: nil, lagSampleTimestamp: nil, partitions: []),
        ])
        #expect(Status.render(doc) == """
            REGION     UP   LAG EVENTS  LAG SECONDS  REPLICATED THROUGH
            eu-west-1  yes     unknown      unknown  unknown

            kafka: Local: Broker transport failure

            """)
    }

    @Test("`status --url` against a running endpoint succeeds; an unreachable one exits 69, a wrong one 1, a bad config 78")
    func statusExitCodes() async throws {
        let (status, _, _) = fedStatus("statuscmd")
        try await withServer(status) { port in
            try await Status.parse(["--url", "http://127.0.0.1:\(port)"]).run()
            try await Status.parse(["--url", "http://127.0.0.1:\(port)/", "--json"]).run()
            await #expect(throws: ExitCode.failure) { try await Status.parse(["--url", "http://127.0.0.1:\(port)/nope"]).run() }
        }
        // Nothing listens on a port the kernel just handed out and took back.
        let closed = try freeLoopbackPort()
        await #expect(throws: ExitCode.unavailable) {
            try await Status.parse(["--url", "http://127.0.0.1:\(closed)", "--timeout", "2"]).run()
        }
        await #expect(throws: ExitCode.configuration) {
            try await Status.parse(["--config", "/nonexistent/region-replicator.yaml"]).run()
        }
        await #expect(throws: ExitCode.usage) { try await Status.parse(["--url", "https://127.0.0.1:1"]).run() }
        #expect(throws: (any Error).self) { try Status.parse(["--url", "http://a:1", "--config", "/x.yaml"]) }
    }

    @Test("`status` finds the daemon from --url or http.listen (a wildcard listener is reached on loopback)")
    func statusTarget() throws {
        let a = try Status.parse(["--url", "http://127.0.0.1:9466"]).resolveTarget()
        #expect(a.host == "127.0.0.1" && a.port == 9466 && a.basePath == "")
        let b = try Status.parse(["--url", "http://[::1]:9000/replicator/"]).resolveTarget()
        #expect(b.host == "::1" && b.port == 9000 && b.basePath == "/replicator")
        #expect(b.display == "http://[::1]:9000/replicator")

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("config.yaml").path
        try """
            regions:
              - name: eu-west-1
                dsn: "host=eu dbname=app"
            http:
              listen: "0.0.0.0:9555"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let c = try Status.parse(["--config", path]).resolveTarget()
        #expect(c.host == "127.0.0.1" && c.port == 9555)

        // Only http.listen is read: a dsn_file nobody can read here is no obstacle.
        try """
            regions:
              - name: eu-west-1
                dsn_file: /nonexistent/credentials/eu-west-1
            http:
              listen: "[::1]:9556"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        let d = try Status.listenAddress(configPath: path, environment: [:])
        #expect(d.host == "::1" && d.port == 9556)
        // The environment wins, as for the daemon; no http section means the default.
        try "regions: []\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try Status.listenAddress(configPath: path, environment: [:]) == ("127.0.0.1", 9466))
        #expect(try Status.listenAddress(configPath: path, environment: ["REGION_REPLICATOR_HTTP_LISTEN": "127.0.0.2:1234"])
                == ("127.0.0.2", 1234))
        for bad in ["http:\n  listen: 9466\n", "http: [1]\n", "- a\n", "http:\n  listen: \"nohost\"\n", ": : :\n  - ["] {
            try bad.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(throws: Status.ListenError.self, "\(bad)") { try Status.listenAddress(configPath: path, environment: [:]) }
        }
        #expect(throws: Status.ListenError.self) { try Status.listenAddress(configPath: path + ".missing", environment: [:]) }
    }

    @Test("The status client parses Content-Length, chunked and close-delimited bodies")
    func plainHTTPParsing() throws {
        let fixed = try PlainHTTP.parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello...".utf8))
        #expect(fixed.status == 200 && fixed.text == "hello" && fixed.header("x-a") == "b")
        let chunked = try PlainHTTP.parse(Array("HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n".utf8))
        #expect(chunked.status == 503 && chunked.text == "wikipedia ")
        let closeDelimited = try PlainHTTP.parse(Array("HTTP/1.0 404 Not Found\r\n\r\nno".utf8))
        #expect(closeDelimited.status == 404 && closeDelimited.text == "no")
        #expect(throws: PlainHTTP.Failure.self) { try PlainHTTP.parse(Array("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".utf8)) }
        #expect(throws: PlainHTTP.Failure.self) { try PlainHTTP.parse(Array("garbage\r\n\r\n".utf8)) }
        #expect(throws: PlainHTTP.Failure.self) { try PlainHTTP.parse([]) }
    }

    /// A loopback port nothing listens on (the kernel's pick for port 0, released).
    func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { throw TestFailure("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}
