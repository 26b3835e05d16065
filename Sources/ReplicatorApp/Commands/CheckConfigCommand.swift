import ArgumentParser
import Foundation
import KafkaClient
import Logging
import PostgresClient
import ReplicationCore
import ServiceLifecycle

struct CheckConfig: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Parse and validate the configuration, connect to Kafka and every region, print the results.")
    @OptionGroup var options: ConfigOption
    @Option(help: "Seconds to wait for each service.") var timeout: Int = 5

    func run() async throws {
        let config = try options.load()
        let redact = Redactor(config: config)
        let logger = Logger(label: "region-replicator")
        LibraryLogging.routeKafka(to: logger, cap: .debug, redact: { redact($0) })
        var rows: [(String, String, String)] = [("config", config.path, "ok")]
        do {
            try config.kafkaConfiguration.validate()
        } catch {
            rows.append(("kafka.properties", config.path, "ERROR: \(error)"))
            Self.printTable(rows, redact)
            throw ExitCode.configuration
        }
        var unreachable = false
        var tableProblems = false
        let kafkaStatus: String = await BlockingThread.run(name: "check-config") { [timeout] in
            // librdkafka's lines go to the trail (for the root cause) and to the logger at debug.
            let trail = KafkaErrorTrail()
            do {
                let consumer = try KafkaConsumer(configuration: config.kafkaConfiguration, groupID: nil, log: { level, facility, message in
                    trail.record(level: level, facility: facility, message: message)
                    logger.debug("librdkafka: \(redact(message))", metadata: ["facility": "\(facility)"])
                })
                defer { consumer.close() }
                let n = try consumer.partitionCount(topic: config.kafka.topic, timeoutMs: Int32(timeout * 1000))
                return "ok (topic \(config.kafka.topic): \(n) partitions)"
            } catch {
                // A TLS or SASL problem in one line naming the cause; librdkafka's wording is in the debug log.
                if let reason = trail.reason(for: error) { return "UNREACHABLE: \(reason)" }
                guard let cause = trail.rootCause else { return "UNREACHABLE: \(error)" }
                return "UNREACHABLE: \(cause) (\(error))"
            }
        }
        if !kafkaStatus.hasPrefix("ok") { unreachable = true }
        rows.append(("kafka", config.kafka.brokers, kafkaStatus))
        for r in config.regions {
            let (status, problems, warnings): (String, [Schema.TableProblem], [String]) = await BlockingThread.run(name: "check-config") { [timeout] in
                do {
                    let db = try PostgresConnection(conninfo: r.dsn.value, applicationName: "region-replicator check-config",
                                                    connectTimeoutSeconds: timeout, queryTimeout: .seconds(timeout))
                    defer { db.close() }
                    let warnings = try Schema.timeZoneWarning(db).map { [$0] } ?? []
                    let missing = try Schema.missingTables(db, table: config.apply.table)
                    if !missing.isEmpty {
                        return ("ok, NOT MIGRATED (missing \(missing.joined(separator: ", "))): run `region-replicator migrate`", [], warnings)
                    }
                    if let p = try Schema.versionProblem(db, table: config.apply.table, region: r.name) {
                        return ("ok", [Schema.TableProblem(message: p, fix: nil)], warnings)
                    }
                    var problems = try Schema.inspect(db, table: config.apply.table, columns: config.apply.columns)
                    if config.captures(r) {
                        // What capture checks before it streams: replica identity, publication, slot.
                        do {
                            _ = try CaptureSchema.inspect(db, table: config.apply.table, slot: config.capture.slotName(for: r.name),
                                                          publication: config.capture.publication)
                        } catch let p as CaptureSchema.Problem {
                            problems.append(Schema.TableProblem(message: "capture: \(p)", fix: nil))
                        }
                    }
                    return ("ok", problems, warnings)
                } catch {
                    return ("UNREACHABLE: \(error)", [], [])
                }
            }
            if !status.hasPrefix("ok") { unreachable = true }
            let target = PostgresConnection.describe(r.dsn.value)
            rows.append(("region \(r.name)", target, status))
            for w in warnings { rows.append(("region \(r.name)", target, "WARNING: \(w)")) }
            for p in problems {
                tableProblems = true
                rows.append(("region \(r.name)", target, "TABLE ERROR: \(p)"))
            }
        }
        Self.printTable(rows, redact)
        if unreachable { throw ExitCode.unavailable }
        if tableProblems { throw ExitCode.configuration }
    }

    static func printTable(_ rows: [(String, String, String)], _ redact: Redactor) {
        var table = TextTable(header: ["COMPONENT", "TARGET", "STATUS"])
        for (component, target, status) in rows { table.append([component, target, status]) }
        print(redact(table.rendered), terminator: "")
    }
}
