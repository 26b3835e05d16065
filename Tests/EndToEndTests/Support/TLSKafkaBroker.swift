import Foundation

/// A Kafka-protocol broker that clients reach over TLS only: Tansu (a standalone
/// Kafka-compatible broker) on a private plaintext loopback port, behind stunnel, which accepts
/// TLS on the ports below and forwards to it. Tansu advertises one of them
/// (`advertised`), so every connection a client makes after bootstrap is TLS too.
///
/// Certificates are made for each instance with openssl: a CA and another CA that signed
/// nothing of ours; the broker's certificate for `IP:127.0.0.1, DNS:localhost`, an expired one
/// (validity in 2020) and one for another host only (`DNS:wrong.example`), all signed by the
/// CA; and a client certificate whose key is encrypted with ``clientKeyPassword``.
///
/// Needs `RR_TEST_TANSU` and `RR_TEST_LIBRDKAFKA_DIR` (scripts/test sets both) and stunnel4.
/// Tansu 0.6 cannot talk to Debian's librdkafka 2.0.2: whatever must get past the TLS handshake
/// runs on librdkafka 2.16 (``librdkafka216``). Everything is stopped and removed on release.
final class TLSKafkaBroker: @unchecked Sendable {
    /// The TLS listeners, each with the broker certificate it presents.
    enum Listener: String, CaseIterable, Sendable {
        /// The right certificate; no client certificate asked for.
        case tls
        /// The right certificate; a client certificate signed by the CA is required (mutual TLS).
        case mutual
        /// A certificate whose validity ended in 2020.
        case expired
        /// A certificate for `wrong.example` only.
        case wrongHost
    }

    let dir: String
    let advertised: Listener
    let plainPort: Int
    let ports: [Listener: Int]
    let clientKeyPassword = "KeyPass-\(UUID().uuidString.prefix(8))"
    private var tansu: ChildProcess?
    private var stunnel: ChildProcess?

    var caFile: String { dir + "/ca.crt" }
    var wrongCAFile: String { dir + "/wrong-ca.crt" }
    var clientCertificateFile: String { dir + "/client.crt" }
    var clientKeyFile: String { dir + "/client.key" }
    var tansuLog: String { (try? String(contentsOfFile: dir + "/tansu.log", encoding: .utf8)) ?? "" }
    var stunnelLog: String { (try? String(contentsOfFile: dir + "/stunnel.log", encoding: .utf8)) ?? "" }

    static var tansuBinary: String? { ProcessInfo.processInfo.environment["RR_TEST_TANSU"] }
    /// The environment that runs a client on librdkafka 2.16 instead of Debian's 2.0.2.
    static var librdkafka216: [String: String] {
        ["LD_LIBRARY_PATH": ProcessInfo.processInfo.environment["RR_TEST_LIBRDKAFKA_DIR"] ?? "/nonexistent"]
    }

    /// `advertised`: the listener Tansu names in its metadata. `authentication`: Tansu's
    /// `--authentication` (SASL SCRAM required before any other request).
    init(advertised: Listener = .tls, authentication: Bool = false) throws {
        guard let tansuBinary = Self.tansuBinary, FileManager.default.isExecutableFile(atPath: tansuBinary),
              let libDir = ProcessInfo.processInfo.environment["RR_TEST_LIBRDKAFKA_DIR"],
              FileManager.default.fileExists(atPath: libDir + "/librdkafka.so.1") else {
            throw TestSetupError("RR_TEST_TANSU / RR_TEST_LIBRDKAFKA_DIR are not set: run the tests with `bash scripts/test` (its venv has Tansu and librdkafka 2.16)")
        }
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/stunnel4") else {
            throw TestSetupError("no /usr/bin/stunnel4: apt-get install stunnel4 (scripts/test installs it)")
        }
        self.advertised = advertised
        dir = NSTemporaryDirectory() + "rr-kafka-tls-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        plainPort = try freeLoopbackPort()
        var ports: [Listener: Int] = [:]
        for listener in Listener.allCases { ports[listener] = try freeLoopbackPort() }
        self.ports = ports
        do {
            try makeCertificates()
            var arguments = ["broker", "--listener-url", "tcp://127.0.0.1:\(plainPort)",
                             "--advertised-listener-url", "tcp://127.0.0.1:\(ports[advertised]!)", "--storage-engine", "memory://tansu/"]
            if authentication { arguments.append("--authentication") }
            tansu = try ChildProcess(tansuBinary, arguments, outputPath: dir + "/tansu.log")
            try writeStunnelConfig()
            stunnel = try ChildProcess("/usr/bin/stunnel4", [dir + "/stunnel.conf"], outputPath: dir + "/stunnel.log")
            try waitUntil("Tansu and stunnel to listen", timeout: .seconds(20), interval: .milliseconds(20)) {
                guard tansu?.isRunning == true, stunnel?.isRunning == true else {
                    throw TestSetupError("tansu or stunnel exited: \(tansuLog) \(stunnelLog)")
                }
                return ([plainPort] + Listener.allCases.map { ports[$0]! }).allSatisfy(Self.accepts)
            }
        } catch {
            cleanUp()
            throw error
        }
    }

    func bootstrap(_ listener: Listener) -> String { "127.0.0.1:\(ports[listener]!)" }

    /// Creates a topic over the broker's private plaintext port (test setup, not a client under test).
    func createTopic(_ name: String, partitions: Int) throws {
        try TestEnvironment.run(Self.tansuBinary!, ["topic", "create", name, "--partitions", String(partitions),
                                                    "--broker", "tcp://127.0.0.1:\(plainPort)"], timeout: .seconds(30))
    }

    /// Produces `records` (key, value) through the advertised listener with the confluent-kafka
    /// producer (librdkafka 2.16) and the client `properties` (TLS settings), waiting until every
    /// one is acknowledged.
    func produce(topic: String, records: [(String, String)], properties: [String: String]) throws {
        try produceWithConfluentKafka(bootstrap: bootstrap(advertised), topic: topic, records: records, properties: properties)
    }

    static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    private func openssl(_ arguments: [String]) throws {
        try TestEnvironment.run("/usr/bin/openssl", arguments)
    }

    private func makeCertificates() throws {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        for ca in ["ca", "wrong-ca"] {
            try openssl(["req", "-x509"] + ec + ["-nodes", "-days", "2", "-subj", "/CN=region-replicator test \(ca)",
                                                 "-keyout", "\(dir)/\(ca).key", "-out", "\(dir)/\(ca).crt"])
        }
        try openssl(["req"] + ec + ["-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "\(dir)/server.key", "-out", "\(dir)/server.csr"])
        try "subjectAltName = IP:127.0.0.1, DNS:localhost\n".write(toFile: dir + "/san.ext", atomically: false, encoding: .utf8)
        try "subjectAltName = DNS:wrong.example\n".write(toFile: dir + "/wrong-san.ext", atomically: false, encoding: .utf8)
        let sign = ["x509", "-req", "-in", "\(dir)/server.csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
                    "-CAcreateserial", "-days", "2"]
        try openssl(sign + ["-extfile", "\(dir)/san.ext", "-out", "\(dir)/server.crt"])
        try openssl(sign + ["-extfile", "\(dir)/wrong-san.ext", "-out", "\(dir)/wronghost.crt"])
        // Expired: `openssl x509 -days` cannot go back in time, `openssl ca` takes explicit dates.
        try "".write(toFile: dir + "/index.txt", atomically: false, encoding: .utf8)
        try """
            [ ca ]
            default_ca = test
            [ test ]
            database = \(dir)/index.txt
            new_certs_dir = \(dir)
            serial = \(dir)/ca.srl
            default_md = sha256
            policy = any
            [ any ]
            commonName = supplied

            """.write(toFile: dir + "/ca.cnf", atomically: false, encoding: .utf8)
        try openssl(["ca", "-batch", "-notext", "-config", "\(dir)/ca.cnf", "-cert", "\(dir)/ca.crt", "-keyfile", "\(dir)/ca.key",
                     "-in", "\(dir)/server.csr", "-startdate", "20200101000000Z", "-enddate", "20200102000000Z",
                     "-extfile", "\(dir)/san.ext", "-out", "\(dir)/expired.crt"])
        // The client's certificate, its key encrypted with a passphrase.
        try openssl(["req"] + ec + ["-passout", "pass:\(clientKeyPassword)", "-subj", "/CN=region-replicator",
                                    "-keyout", clientKeyFile, "-out", "\(dir)/client.csr"])
        try openssl(["x509", "-req", "-in", "\(dir)/client.csr", "-CA", "\(dir)/ca.crt", "-CAkey", "\(dir)/ca.key",
                     "-CAcreateserial", "-days", "2", "-out", clientCertificateFile])
    }

    private func writeStunnelConfig() throws {
        func service(_ listener: Listener, certificate: String, mutual: Bool = false) -> String {
            """
            [\(listener.rawValue)]
            accept = 127.0.0.1:\(ports[listener]!)
            connect = 127.0.0.1:\(plainPort)
            cert = \(dir)/\(certificate)
            key = \(dir)/server.key
            \(mutual ? "CAfile = \(caFile)\nverifyChain = yes\nrequireCert = yes\n" : "")
            """
        }
        try """
            foreground = yes
            pid =
            debug = 5
            \(service(.tls, certificate: "server.crt"))
            \(service(.mutual, certificate: "server.crt", mutual: true))
            \(service(.expired, certificate: "expired.crt"))
            \(service(.wrongHost, certificate: "wronghost.crt"))
            """.write(toFile: dir + "/stunnel.conf", atomically: false, encoding: .utf8)
    }

    private func cleanUp() {
        for child in [stunnel, tansu].compactMap({ $0 }) {
            child.signal(SIGTERM)
            if (try? child.wait(timeout: .seconds(10))) == nil {
                child.signal(SIGKILL)
                _ = try? child.wait(timeout: .seconds(10))
            }
        }
        try? FileManager.default.removeItem(atPath: dir)
    }

    deinit { cleanUp() }
}
