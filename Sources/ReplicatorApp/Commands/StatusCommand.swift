import ArgumentParser
import Foundation
import ReplicationCore
import Yams

// MARK: - status

/// `region-replicator status`: the per-region lag table of a running daemon, from its `/lag`.
struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the per-region lag of a running daemon (from its HTTP endpoint).",
        discussion: """
            Fetches GET /lag from the daemon at --url, or at http://<http.listen> of the configuration \
            file. Exit codes: 0 ok, 64 usage, 69 daemon unreachable, 78 configuration error, 1 other.
            """)

    @Option(name: .long, help: "Configuration file (YAML); its http.listen locates the daemon. Default: \(ReplicatorConfig.defaultPath).")
    var config: String?

    @Option(name: .long, help: "The daemon's base URL, e.g. http://127.0.0.1:9466 (instead of --config).")
    var url: String?

    @Flag(name: .long, help: "Print the /lag JSON body as received.")
    var json = false

    @Option(name: .long, help: "Seconds to wait for the daemon.")
    var timeout: Int = 5

    func validate() throws {
        if config != nil && url != nil { throw ValidationError("give --config or --url, not both") }
        if timeout < 1 { throw ValidationError("--timeout must be at least 1 second") }
    }

    func run() async throws {
        let target = try resolveTarget()
        let request = PlainHTTP.Request(method: "GET", host: target.host, port: target.port, path: target.basePath + "/lag",
                                        timeout: .seconds(timeout))
        let response: PlainHTTP.Response
        do {
            response = try await BlockingThread.run(name: "status-http") { try PlainHTTP.perform(request) }
        } catch {
            printError("cannot reach the daemon at \(target.display)/lag: \(error) (is `region-replicator run` running, and is http.listen \(url == nil ? "in \(config ?? ReplicatorConfig.defaultPath) " : "")right?)")
            throw ExitCode.unavailable
        }
        guard response.status == 200 else {
            printError("\(target.display)/lag answered HTTP \(response.status): \(String(decoding: response.body.prefix(300), as: UTF8.self))")
            throw ExitCode.failure
        }
        if json {
            FileHandle.standardOutput.write(Data(response.body))
            if response.body.last != UInt8(ascii: "\n") { print() }
            return
        }
        let doc: LagDocument
        do {
            doc = try JSONDecoder().decode(LagDocument.self, from: Data(response.body))
        } catch {
            printError("\(target.display)/lag did not answer with a region-replicator /lag document: \(error)")
            throw ExitCode.failure
        }
        print(Self.render(doc), terminator: "")
        await printFreshness(host: target.host, port: target.port, basePath: target.basePath)
    }

    /// Where the daemon listens: from `--url`, else from the configuration's `http.listen`.
    func resolveTarget() throws -> (host: String, port: Int, basePath: String, display: String) {
        if let url {
            guard let c = URLComponents(string: url), c.scheme?.lowercased() == "http", let host = c.host, !host.isEmpty else {
                printError("--url \(url): expected http://HOST[:PORT] (https is not supported; the endpoint is meant for loopback)")
                throw ExitCode.usage
            }
            let port = c.port ?? 80
            var base = c.percentEncodedPath
            while base.hasSuffix("/") { base.removeLast() }
            let h = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
            return (h, port, base, "http://\(host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host):\(port)\(base)")
        }
        let path = config ?? ReplicatorConfig.defaultPath
        let host: String, port: Int
        do {
            (host, port) = try Self.listenAddress(configPath: path, environment: ProcessInfo.processInfo.environment)
        } catch {
            printError("configuration error: \(error)")
            throw ExitCode.configuration
        }
        // A wildcard listener is reached on loopback.
        let connectHost = host == "0.0.0.0" || host.isEmpty ? "127.0.0.1" : host == "::" ? "::1" : host
        return (connectHost, port, "", "http://\(connectHost.contains(":") ? "[\(connectHost)]" : connectHost):\(port)")
    }

    struct ListenError: Error, CustomStringConvertible {
        var description: String
    }

    /// `http.listen` as the daemon reads it: `REGION_REPLICATOR_HTTP_LISTEN`, else the file's
    /// `http.listen`, else the default.
    ///
    /// Only that key is read: `status` needs no credentials, so a `dsn_file` that only the
    /// daemon can read (systemd `LoadCredential=`) is no obstacle.
    static func listenAddress(configPath path: String, environment: [String: String]) throws(ListenError) -> (host: String, port: Int) {
        var listen = ReplicatorConfig.HTTP().listen
        var key = "http.listen (default)"
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ListenError(description: "\(path): cannot read configuration file: \((error as NSError).localizedDescription)")
        }
        // The loader's own YAML walker, on the `http` section only: the same type rules and
        // error texts as the daemon's (which never quote the file, where a DSN may sit).
        let walker = YAMLWalker(file: path)
        do throws(ConfigError) {
            let root: Node?
            do {
                root = try Yams.compose(yaml: text)
            } catch let error as YamlError {
                throw ConfigError(file: path, key: nil, message: YAMLWalker.describe(error))
            } catch {
                throw ConfigError(file: path, key: nil, message: "invalid YAML")
            }
            if let root, !root.isNullScalar {
                guard case .mapping(let mapping) = root else {
                    throw ConfigError(file: path, key: nil, message: "expected a mapping at the top level, got \(YAMLWalker.kind(of: root))")
                }
                if let http = mapping["http"] {
                    for entry in try walker.entries(of: http, at: "http", known: RawConfig.httpKeys) {
                        listen = try walker.string(entry.node, at: entry.key)
                        key = entry.key
                    }
                }
            }
        } catch {
            throw ListenError(description: error.description)
        }
        // The environment overrides the file, as for the daemon.
        if let env = environment["REGION_REPLICATOR_HTTP_LISTEN"] {
            listen = env
            key = "REGION_REPLICATOR_HTTP_LISTEN"
        }
        switch ReplicatorConfig.checkListen(listen) {
        case .success(let pair): return pair
        case .failure(let why): throw ListenError(description: "\(path): \(key): \(why.description)")
        }
    }

    /// The table: REGION, UP, LAG EVENTS, LAG SECONDS, REPLICATED THROUGH, each down
    /// region's problem below it, and the records gone from the topic before they were applied.
    static func render(_ doc: LagDocument) -> String {
        var table = TextTable(header: ["REGION", "UP", "LAG EVENTS", "LAG SECONDS", "REPLICATED THROUGH"], rightAligned: [2, 3])
        for r in doc.regions {
            // Figures nobody has measured yet (the lag monitor never read the broker's high
            // watermarks) are unknown, not 0: a daemon that never reached Kafka is not caught up.
            let measured = r.lagSampleTimestamp != nil
            table.append([r.region, r.up ? "yes" : "NO",
                          measured ? String(r.lagEvents) : "unknown",
                          measured ? String(format: "%.3f", r.lagSeconds) : "unknown",
                          measured ? r.replicatedThrough : "unknown"])
        }
        var out = table.rendered
        if doc.kafka != "ok" { out += "\nkafka: \(doc.kafka)\n" }
        let down = doc.regions.filter { !$0.up }
        if !down.isEmpty {
            out += "\n"
            for r in down { out += "\(r.region): \(r.problem ?? "down")\n" }
        }
        let lost = doc.regions.filter { ($0.gone ?? 0) > 0 }
        if !lost.isEmpty {
            out += "\n"
            for r in lost { out += "\(r.region): \(r.gone ?? 0) records gone from the topic (retention) before they were applied\n" }
        }
        return out + renderCapture(doc)
    }
}
