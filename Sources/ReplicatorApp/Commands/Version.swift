import ArgumentParser
import KafkaClient
import PostgresClient

/// The version of region-replicator: the one place it is written. `--version` prints it, the
/// `version` subcommand starts with it, and `scripts/package` reads it from this line.
public let replicatorVersion = "0.1.0"

/// The Swift compiler that built this binary (to the minor version).
let swiftCompilerVersion: String = {
    #if compiler(>=6.5)
    ">= 6.5"
    #elseif compiler(>=6.4)
    "6.4"
    #elseif compiler(>=6.3)
    "6.3"
    #elseif compiler(>=6.2)
    "6.2"
    #elseif compiler(>=6.1)
    "6.1"
    #else
    "6.0"
    #endif
}()

/// `region-replicator version`: what a bug report needs to say what was running.
struct Version: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the version, the versions of the packages it was built from and of the C libraries it runs with.",
        discussion: "`--version` prints the first line only.")

    func run() {
        print(Self.report())
    }

    static func report() -> String {
        var lines = [
            "region-replicator \(replicatorVersion)",
            "swift: \(swiftCompilerVersion)",
            "librdkafka: \(librdkafkaRuntimeVersion()) (built against \(librdkafkaBuildVersion()))",
            "libpq: \(libpqRuntimeVersion())",
            "packages:",
        ]
        lines += buildDependencies.map { "  \($0.name) \($0.version)" }
        return lines.joined(separator: "\n")
    }
}
