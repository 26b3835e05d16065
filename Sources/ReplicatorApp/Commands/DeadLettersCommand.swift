import ArgumentParser
import Foundation
import PostgresClient
import ReplicationCore

// MARK: - dead-letters

/// `region-replicator dead-letters list|retry`: inspect and re-apply a region's dead letters (docs/operations.md).
struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "List a region's dead letters, or retry them through the apply path.",
        subcommands: [DeadLettersList.self, DeadLettersRetry.self])
}

/// The options both subcommands take.
struct DeadLetterTarget: ParsableArguments {
    @OptionGroup var options: ConfigOption
    @Option(help: "The region whose dead letters to work on.") var region: String

    /// Loads the configuration and the region (exit 78 on either error).
    func resolve() throws -> (ReplicatorConfig, ReplicatorConfig.Region) {
        let config = try options.load()
        do {
            return (config, try config.region(named: region))
        } catch {
            printError("configuration error: \(error)")
            throw ExitCode.configuration
        }
    }

    /// Connects to the region, or exits 69 saying which region could not be reached.
    static func connect(_ config: ReplicatorConfig, _ region: ReplicatorConfig.Region, purpose: String) async throws -> PostgresConnection {
        let table = config.apply.table
        let (db, problem): (PostgresConnection, String?)
        do {
            (db, problem) = try await BlockingThread.run(name: "dead-letters") {
                let db = try PostgresConnection(conninfo: region.dsn.value, applicationName: "region-replicator dead-letters \(purpose)")
                do { return (db, try Schema.versionProblem(db, table: table, region: region.name)) } catch { db.close(); throw error }
            }
        } catch {
            printError(Redactor(config: config)("region \(region.name) (\(PostgresConnection.describe(region.dsn.value))): \(error)"))
            throw ExitCode.unavailable
        }
        if let problem {
            db.close()
            printError("region \(region.name): \(problem)")
            throw ExitCode.configuration
        }
        return db
    }
}

// MARK: - list

struct DeadLettersList: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "list",
        abstract: "List the region's unresolved dead letters (all of them with --all).",
        discussion: """
            Columns: id, partition, offset, first seen (UTC), error, and a payload preview of at most \
            80 characters with control characters and invalid UTF-8 escaped. --json prints one JSON \
            array with the full error and the retry state.
            """)

    @OptionGroup var target: DeadLetterTarget
    @Flag(help: "Print JSON.") var json = false
    @Flag(help: "Include resolved dead letters.") var all = false

    struct Entry: Codable, Sendable {
        var id: Int64
        var topic: String
        var partition: Int32
        var offset: Int64
        var firstSeen: String?
        var retriedAt: String?
        var resolved: Bool
        var error: String
        var payloadBytes: Int
        var payloadPreview: String
    }
    // JSON keys are snake_case (first_seen, retried_at, payload_bytes, payload_preview).

    func run() async throws {
        let (config, region) = try target.resolve()
        let db = try await DeadLetterTarget.connect(config, region, purpose: "list")
        defer { db.close() }
        let all = self.all, messages = config.apply.table
        let entries: [Entry]
        do {
            entries = try await BlockingThread.run(name: "dead-letters") {
                // Schema-qualified, as the daemon names it (not whatever search_path finds first).
                let deadLetters = try Schema.check(db, table: messages).tables.deadLetters
                return try db.query("""
                    SELECT id, topic, partition, "offset",
                           to_char(first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                           to_char(retried_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                           resolved, coalesce(error, ''), coalesce(octet_length(payload), 0),
                           encode(substring(payload FROM 1 FOR 320), 'hex'), payload IS NULL
                    FROM \(deadLetters)
                    WHERE $1::boolean OR NOT resolved
                    ORDER BY id
                    """, [all ? "true" : "false"]).rows.map { r in
                    Entry(id: Int64(r[0] ?? "") ?? 0, topic: r[1] ?? "", partition: Int32(r[2] ?? "") ?? -1,
                          offset: Int64(r[3] ?? "") ?? -1, firstSeen: r[4], retriedAt: r[5], resolved: r[6] == "t",
                          error: r[7] ?? "", payloadBytes: Int(r[8] ?? "") ?? 0,
                          payloadPreview: r[10] == "t" ? "(no value)" : Preview.of(Hex.decode(r[9] ?? ""), limit: 80))
                }
            }
        } catch {
            printError(Redactor(config: config)("region \(region.name): cannot read replicator_dead_letters: \(error)"))
            throw ExitCode.failure
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let data = try encoder.encode(entries)
            print(String(decoding: data, as: UTF8.self))
            return
        }
        if entries.isEmpty {
            print("region \(region.name): no \(all ? "" : "unresolved ")dead letters")
            return
        }
        var table = TextTable(header: ["ID", "PARTITION", "OFFSET", "FIRST SEEN", all ? "RESOLVED" : nil, "ERROR", "PAYLOAD"].compactMap { $0 })
        for e in entries {
            table.append([String(e.id), String(e.partition), String(e.offset), e.firstSeen ?? "-",
                          all ? (e.resolved ? "yes" : "no") : nil,
                          Preview.of(Array(e.error.utf8), limit: 60), e.payloadPreview].compactMap { $0 })
        }
        print(table.rendered, terminator: "")
    }
}

// MARK: - retry

struct DeadLettersRetry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retry",
        abstract: "Re-decode and re-apply the region's unresolved dead letters (or one, with --id).",
        discussion: """
            Each dead letter goes through the daemon's apply path again, in offset order, one \
            transaction each. Those that now apply (any outcome but dead_lettered) are marked \
            resolved; the others keep their row, with retried_at and the new error.
            """)

    @OptionGroup var target: DeadLetterTarget
    @Option(help: "Only the dead letter with this id.") var id: Int64?

    func run() async throws {
        let (config, region) = try target.resolve()
        let db = try await DeadLetterTarget.connect(config, region, purpose: "retry")
        defer { db.close() }
        let id = self.id
        let table = config.apply.table, regionName = region.name
        // As the daemon's pipeline applies this region (a capturing region: its own origin too,
        // its writes marked as the applier's, so that capture does not publish them again).
        let settings = config.pipelineSettings(for: region)
        let applyToOrigin = settings.applyToOrigin, markOrigin = settings.markApplierOrigin
        let columns = config.apply.columns
        let result: Result<DeadLetterRetrier.Summary, PostgresError> = await BlockingThread.run(name: "dead-letters") {
            do throws(PostgresError) {
                if markOrigin { try ApplierOrigin.markSession(db) }
                // Schema-qualified bookkeeping tables, as the daemon names them.
                let tables = try Schema.check(db, table: table).tables
                let applier = RegionApplier(region: regionName, table: table, applyToOrigin: applyToOrigin, tables: tables,
                                            columns: columns)
                return .success(try DeadLetterRetrier(applier: applier, db: db).retry(id: id))
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .failure(let error):
            printError(Redactor(config: config)("region \(region.name): dead-letter retry failed: \(error)"))
            throw error.isTransient ? ExitCode.unavailable : ExitCode.failure
        case .success(let r):
            if let id, r.resolved + r.failed == 0 {
                printError("region \(region.name): no unresolved dead letter with id \(id)")
                throw ExitCode.failure
            }
            print("dead-letters retry \(region.name): retried \(r.resolved + r.failed): resolved \(r.resolved), "
                + "still failing \(r.failed) (applied \(r.counts[.applied]), duplicate \(r.counts[.duplicate]), "
                + "stale \(r.counts[.stale]), skipped-origin \(r.counts[.skippedOrigin]))")
        }
    }
}

// MARK: - Text helpers

enum Preview {
    /// At most `limit` characters of `bytes` as text: control characters escaped (`\n`, `\t`,
    /// `\u{1b}`, …), invalid UTF-8 bytes as `\xNN`, `…` when cut.
    static func of(_ bytes: [UInt8], limit: Int) -> String {
        var pieces: [String] = []
        var i = 0
        var length = 0
        while i < bytes.count && length <= limit {
            let piece: String
            let (scalar, width) = decodeScalar(bytes, at: i)
            if let scalar {
                piece = escape(scalar)
                i += width
            } else {
                piece = String(format: "\\x%02x", bytes[i])
                i += 1
            }
            pieces.append(piece)
            length += piece.count
        }
        var out = pieces.joined()
        if out.count > limit || i < bytes.count {
            out = String(out.prefix(limit - 1)) + "…"
        }
        return out
    }

    static func escape(_ s: Unicode.Scalar) -> String {
        switch s {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        case "\\": return "\\\\"
        default: break
        }
        switch s.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned:
            return "\\u{\(String(s.value, radix: 16))}"
        default:
            return String(Character(s))
        }
    }

    /// One UTF-8 scalar at `i` (nil when the bytes there are not valid UTF-8).
    static func decodeScalar(_ b: [UInt8], at i: Int) -> (Unicode.Scalar?, Int) {
        let lead = b[i]
        let width: Int
        switch lead {
        case 0x00...0x7F: return (Unicode.Scalar(lead), 1)
        case 0xC2...0xDF: width = 2
        case 0xE0...0xEF: width = 3
        case 0xF0...0xF4: width = 4
        default: return (nil, 1)
        }
        guard i + width <= b.count else { return (nil, 1) }
        var value = UInt32(lead) & (0xFF >> (width + 1))
        for k in 1..<width {
            let c = b[i + k]
            guard c & 0xC0 == 0x80 else { return (nil, 1) }
            value = value << 6 | UInt32(c & 0x3F)
        }
        let minimum: UInt32 = width == 2 ? 0x80 : width == 3 ? 0x800 : 0x10000
        guard value >= minimum, let s = Unicode.Scalar(value) else { return (nil, 1) }
        return (s, width)
    }
}
