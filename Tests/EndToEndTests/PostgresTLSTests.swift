import Foundation
import PostgresClient
import Testing

/// A Postgres server of its own for one test, that accepts TCP connections only over TLS
/// (`hostssl` with a password, no `host` line), with a certificate for 127.0.0.1/localhost
/// signed by a throw-away CA. Removed (stopped, files deleted) when released.
final class TLSPostgresServer: @unchecked Sendable {
    let base: String
    let port: Int
    let password = "tls-S3cret-\(UUID().uuidString.prefix(8))"
    let database = "app"
    /// The CA that signed the server's certificate, and another one that did not.
    var caFile: String { base + "/ca.crt" }
    var wrongCAFile: String { base + "/wrong-ca.crt" }
    private var data: String { base + "/data" }

    init() throws {
        try TestEnvironment.require()
        // Short: the server's unix socket lives here too.
        base = "/tmp/rr-tls-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: false)
        port = try freeLoopbackPort()
        do {
            try makeCertificates()
            try TestEnvironment.run("/bin/chown", ["-R", "postgres:", base])
            try TestEnvironment.run("/usr/sbin/runuser", ["-u", "postgres", "--", TestEnvironment.pgBinDir + "/initdb", "-D", data,
                                                          "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C"])
            for file in ["server.crt", "server.key"] {
                try TestEnvironment.run("/usr/sbin/runuser", ["-u", "postgres", "--", "/bin/cp", base + "/" + file, data + "/" + file])
            }
            try TestEnvironment.run("/bin/chmod", ["0600", data + "/server.key"])
            try append(data + "/postgresql.conf", """

                listen_addresses = '127.0.0.1'
                port = \(port)
                unix_socket_directories = '\(base)'
                fsync = off
                ssl = on
                ssl_cert_file = 'server.crt'
                ssl_key_file = 'server.key'

                """)
            // TCP only over TLS, with a password; no `host` line, so a plaintext TCP connection is refused.
            try "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"
                .write(toFile: data + "/pg_hba.conf", atomically: false, encoding: .utf8)
            try TestEnvironment.pgctl(["-D", data, "-l", data + "/server.log", "-w", "-t", "60", "start"])
            let admin = try PostgresConnection(conninfo: socketConninfo(database: "postgres"))
            defer { admin.close() }
            try admin.execute("ALTER ROLE postgres PASSWORD '\(password)'")
            try admin.execute("CREATE DATABASE \(database)")
        } catch {
            cleanUp()
            throw error
        }
    }

    /// A TCP conninfo with the password; `extra` holds the TLS settings under test.
    func conninfo(_ extra: String) -> String {
        "host=127.0.0.1 port=\(port) dbname=\(database) user=postgres password=\(password) connect_timeout=5 \(extra)"
    }

    /// Over the unix socket (trust), for the test's own checks.
    func socketConninfo(database: String? = nil) -> String {
        "host=\(base) port=\(port) dbname=\(database ?? self.database) user=postgres"
    }

    func query(_ sql: String) throws -> [[String?]] {
        let c = try PostgresConnection(conninfo: socketConninfo())
        defer { c.close() }
        return try c.query(sql, []).rows
    }

    private func makeCertificates() throws {
        let openssl = "/usr/bin/openssl"
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ["ca", "wrong-ca"] {
            try TestEnvironment.run(openssl, ["req", "-x509"] + ec + ["-days", "2", "-subj", "/CN=region-replicator test \(ca)",
                                              "-keyout", "\(base)/\(ca).key", "-out", "\(base)/\(ca).crt"])
        }
        try TestEnvironment.run(openssl, ["req"] + ec + ["-subj", "/CN=127.0.0.1",
                                          "-keyout", "\(base)/server.key", "-out", "\(base)/server.csr"])
        try "subjectAltName = IP:127.0.0.1, DNS:localhost\n".write(toFile: base + "/san.ext", atomically: false, encoding: .utf8)
        try TestEnvironment.run(openssl, ["x509", "-req", "-in", "\(base)/server.csr", "-CA", "\(base)/ca.crt",
                                          "-CAkey", "\(base)/ca.key", "-CAcreateserial", "-days", "2",
                                          "-extfile", "\(base)/san.ext", "-out", "\(base)/server.crt"])
    }

    private func append(_ path: String, _ text: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
    }

    private func cleanUp() {
        if FileManager.default.fileExists(atPath: data + "/postmaster.pid") {
            try? TestEnvironment.pgctl(["-D", data, "-m", "immediate", "-w", "stop"])
        }
        try? FileManager.default.removeItem(atPath: base)
    }

    deinit { cleanUp() }
}

/// Postgres over TLS: `sslmode=verify-full` with the right CA works end to end (and really is
/// TLS); a wrong CA and a plaintext connection to a server that requires TLS are refused with
/// libpq's reason, naming the region, never the password.
@Suite("Postgres over TLS", .serialized)
struct PostgresTLSTests {
    /// A config with one region, `eu-west-1`, at `dsn`; Kafka from `cluster`.
    func writeConfig(_ dir: String, cluster: TestCluster, dsn: String) throws -> String {
        let path = dir + "/config.yaml"
        try """
            kafka:
              brokers: "\(cluster.bootstrap)"
              topic: \(cluster.topic)
              group_prefix: rr-tls
              properties:
                log_level: "4"
            regions:
              - name: eu-west-1
                dsn: "\(dsn)"
            apply:
              connections: 1
              max_batch_delay_ms: 20
            http:
              listen: "127.0.0.1:\(try freeLoopbackPort())"
            """.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    func tempDir() throws -> String {
        let dir = NSTemporaryDirectory() + "rr-tls-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test("sslmode=verify-full with the signing CA: check-config, migrate and the daemon work, every daemon connection is TLS")
    func verifyFullWorks() throws {
        let server = try TLSPostgresServer()
        let cluster = try TestCluster()
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let config = try writeConfig(dir, cluster: cluster, dsn: server.conninfo("sslmode=verify-full sslrootcert=\(server.caFile)"))

        let check = try runReplicator(["check-config", "--config", config])
        #expect(check.status == 0, "check-config: \(check.output)")
        let migrate = try runReplicator(["migrate", "--config", config])
        #expect(migrate.status == 0, "migrate: \(migrate.output)")

        let daemon = try Daemon(["run", "--config", config], logPath: dir + "/daemon.log")
        defer { daemon.kill9() }
        let events = (0..<20).map { i in
            #"{"type":"message.upserted","event_id":"e\#(i)","message_id":"5f7e9c52-0000-4000-8000-\#(String(format: "%012d", i))","session_id":"tls","role":"user","content":"over TLS \#(i)","origin_region":"us-east-1","created_at":"2026-11-24T10:00:00Z","version":1}"#
        }
        for e in events { try cluster.produceRaw(key: "tls", value: Array(e.utf8)) }
        try cluster.producer.flush(timeoutMs: 30_000)
        try waitUntil("20 rows applied over TLS", timeout: .seconds(60)) {
            try server.query("SELECT count(*) FROM messages").first?[0] == "20"
        }
        // The daemon's own sessions (not the test's socket one) are TLS sessions.
        let sessions = try server.query("""
            SELECT a.application_name, s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
            WHERE a.datname = 'app' AND a.client_addr IS NOT NULL
            """)
        #expect(!sessions.isEmpty, "no TCP sessions of the daemon found")
        #expect(sessions.allSatisfy { $0[1] == "t" }, "a daemon session without TLS: \(sessions)")
        daemon.signal(SIGTERM)
        #expect(try daemon.wait() == 0)
        for (name, out) in [("check-config", check.output), ("migrate", migrate.output), ("daemon", daemon.log)] {
            #expect(!out.contains(server.password), "\(name) printed the password")
        }
    }

    @Test("Refused, never downgraded: check-config and migrate exit 69 naming the region and libpq's reason, the daemon retries saying why, nothing is written, no password is printed",
          arguments: [
            // A CA that did not sign the server's certificate.
            ("sslmode=verify-full sslrootcert=WRONG_CA", ["certificate verify failed"]),
            // Plaintext against a server that requires TLS.
            ("sslmode=disable", ["no pg_hba.conf entry", "no encryption"]),
          ])
    func misconfiguredTLSIsRefused(_ settings: String, _ reasons: [String]) throws {
        let server = try TLSPostgresServer()
        let cluster = try TestCluster()
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let dsn = server.conninfo(settings.replacingOccurrences(of: "WRONG_CA", with: server.wrongCAFile))
        let config = try writeConfig(dir, cluster: cluster, dsn: dsn)

        let check = try runReplicator(["check-config", "--config", config])
        #expect(check.status == 69, "check-config exited \(check.status): \(check.output)")
        let row = check.output.split(separator: "\n").first { $0.contains("region eu-west-1") }.map(String.init) ?? ""
        #expect(row.contains("UNREACHABLE") && reasons.allSatisfy(row.contains), "\(check.output)")
        let migrate = try runReplicator(["migrate", "--config", config])
        #expect(migrate.status == 69, "migrate exited \(migrate.status): \(migrate.output)")
        #expect(migrate.output.contains("eu-west-1") && reasons.allSatisfy(migrate.output.contains), "\(migrate.output)")

        let daemon = try Daemon(["run", "--config", config], logPath: dir + "/daemon.log")
        defer { daemon.kill9() }
        try waitUntil("the daemon to log why it cannot connect", timeout: .seconds(30)) {
            reasons.allSatisfy(daemon.log.contains)
        }
        daemon.signal(SIGTERM)
        _ = try daemon.wait()
        #expect(try server.query("SELECT count(*) FROM pg_tables WHERE tablename = 'messages'").first?[0] == "0",
                "something was written over a refused connection")
        for (name, out) in [("check-config", check.output), ("migrate", migrate.output), ("daemon", daemon.log)] {
            #expect(!out.contains(server.password), "\(name) printed the password")
        }
    }
}
