import Foundation
import Testing

/// `--version` and `version`, as the built binary prints them.
@Suite("version output")
struct VersionOutputTests {
    /// The version as `scripts/package` reads it: the `replicatorVersion` line of Version.swift.
    static func sourceVersion() throws -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        let source = try String(contentsOfFile: root + "/Sources/ReplicatorApp/Commands/Version.swift", encoding: .utf8)
        let match = try #require(source.firstMatch(of: #/\npublic let replicatorVersion = "([^"]+)"\n/#))
        return String(match.1)
    }

    /// The upstream part of an installed Debian package's version ("15.13-0+deb12u1" → "15.13").
    static func debianVersion(_ package: String) throws -> String {
        let out = try TestEnvironment.run("/usr/bin/dpkg-query", ["-W", "-f=${Version}", package])
        return String(out.prefix { $0 != "-" && $0 != "+" && $0 != "~" })
    }

    @Test("--version prints exactly one line: the version of Version.swift")
    func oneLine() throws {
        let r = try runReplicator(["--version"], timeout: .seconds(30))
        #expect(r.status == 0)
        #expect(r.output == (try Self.sourceVersion()) + "\n", "\(r.output)")
    }

    @Test("version: the same first line, then the librdkafka and libpq it runs with, and the packages it was built from")
    func report() throws {
        let r = try runReplicator(["version"], timeout: .seconds(30))
        #expect(r.status == 0, "\(r.output)")
        let lines = r.output.split(separator: "\n")
        #expect(lines.first.map(String.init) == "region-replicator " + (try Self.sourceVersion()))
        let rdkafka = try Self.debianVersion("librdkafka1")
        #expect(lines.contains { $0.hasPrefix("librdkafka: \(rdkafka) (built against ") }, "librdkafka1 \(rdkafka): \(r.output)")
        let libpq = try Self.debianVersion("libpq5")
        #expect(lines.contains("libpq: \(libpq)"), "libpq5 \(libpq): \(r.output)")
        #expect(lines.contains { $0.hasPrefix("  swift-argument-parser ") } && lines.contains { $0.hasPrefix("  Yams ") }, "\(r.output)")
    }
}
