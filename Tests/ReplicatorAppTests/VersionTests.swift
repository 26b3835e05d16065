import ArgumentParser
import Testing

@testable import ReplicatorApp

@Suite("version")
struct VersionTests {
    @Test("--version is the one constant; `version` starts with the same line, then Swift, the C libraries and every package")
    func report() throws {
        #expect(RegionReplicatorCommand.configuration.version == replicatorVersion)
        #expect(replicatorVersion.wholeMatch(of: #/[0-9]+\.[0-9]+\.[0-9]+([-+~][0-9A-Za-z.]+)?/#) != nil)

        let lines = Version.report().split(separator: "\n", omittingEmptySubsequences: false)
        #expect(lines.first == "region-replicator \(replicatorVersion)")
        #expect(lines.contains { $0.wholeMatch(of: #/swift: (>= )?6\.[0-9]+/#) != nil }, "\(lines)")
        #expect(lines.contains { $0.wholeMatch(of: #/librdkafka: [0-9]+\.[0-9]+\.[0-9]+ \(built against [0-9]+\.[0-9]+\.[0-9]+\)/#) != nil }, "\(lines)")
        #expect(lines.contains { $0.wholeMatch(of: #/libpq: [0-9]+\.[0-9]+/#) != nil }, "\(lines)")
        let packages = lines.drop { $0 != "packages:" }.dropFirst()
        // Every dependency Package.swift names, with a version (the plugin also lists theirs).
        for direct in ["swift-argument-parser", "swift-log", "swift-crypto", "swift-service-lifecycle", "Yams",
                       "swift-metrics", "swift-prometheus", "hummingbird"] {
            #expect(packages.contains { $0.wholeMatch(of: #/  (\S+) (\S+)/#)?.1 == Substring(direct) }, "\(direct) in \(packages)")
        }
        #expect(packages.count == buildDependencies.count && packages.count > 8)
        #expect(buildDependencies.map(\.name) == buildDependencies.map(\.name).sorted())
        #expect(buildDependencies.allSatisfy { !$0.version.isEmpty && $0.version != "root" })
    }

    @Test("`version` is a subcommand that takes no configuration")
    func parses() throws {
        let command = try RegionReplicatorCommand.parseAsRoot(["version"])
        #expect(command is Version)
        #expect(throws: (any Error).self) { try RegionReplicatorCommand.parseAsRoot(["version", "--config", "/x"]) }
    }
}
