import ArgumentParser
import Foundation
import KafkaClient
import Logging
import PostgresClient
import ReplicationCore
import ServiceLifecycle

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create the tables in each region (idempotent).")
    @OptionGroup var options: ConfigOption
    @Option(help: "Only this region.") var region: String?
    @Flag(name: .customLong("alter-existing-table"),
          help: "Also alter a messages table that migrate did not create: add what it lacks, the id trigger and the version default.")
    var alterExistingTable = false

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        var regions = config.regions
        if let region {
            do { regions = [try config.region(named: region)] } catch {
                printError("configuration error: \(error)")
                throw ExitCode.configuration
            }
        }
        var failed = false
        var incomplete = false
        for r in regions {
            let target = PostgresConnection.describe(r.dsn.value)
            do {
                let report = try await BlockingThread.run(name: "migrate") { [alterExistingTable] in
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator migrate")
                    defer { db.close() }
                    var report = try Schema.migrate(db, table: config.apply.table, columns: config.apply.columns,
                                                    alterExistingTable: alterExistingTable)
                    if config.captures(r) {
                        // After the tables' transaction: a slot cannot be created in a transaction that has written.
                        let more = try CaptureSchema.migrate(db, table: config.apply.table, columns: config.apply.columns, slot: config.capture.slotName(for: r.name),
                                                             publication: config.capture.publication,
                                                             origins: config.apply.connections + 1, alterExistingTable: alterExistingTable)
                        report.done += more.done
                        report.notes += more.notes
                        report.problems += more.problems
                    }
                    return report
                }
                for line in report.done { print("region \(r.name): \(line)") }
                for note in report.notes { print("region \(r.name): note: \(note)") }
                if let tz = try? await BlockingThread.run(name: "migrate", {
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator migrate")
                    defer { db.close() }
                    return try Schema.timeZoneWarning(db)
                }) {
                    print("region \(r.name): WARNING: \(tz)")
                }
                if report.problems.isEmpty {
                    print("region \(r.name) (\(target)): migrated")
                } else {
                    incomplete = true
                    for p in report.problems { printError("region \(r.name): \(p)") }
                    printError("region \(r.name) (\(target)): migrate incomplete: \(report.problems.count) problem(s) above need a person")
                }
            } catch {
                failed = true
                printError(redact("region \(r.name) (\(target)): migrate failed: \(error)"))
            }
        }
        if failed { throw ExitCode.unavailable }
        if incomplete { throw ExitCode.configuration }
    }
}
