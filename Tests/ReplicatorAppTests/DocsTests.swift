import Foundation
import ReplicationCore
import Testing

@testable import ReplicatorApp

/// The repository's own documents: the README stays short, every link between the documents
/// resolves, and nothing points at a document outside the repository.
@Suite("DocsTests", .serialized)
struct DocsTests {
    /// The repository root: this file is `<root>/Tests/ReplicatorAppTests/DocsTests.swift`.
    static let root: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func read(_ relativePath: String) throws -> String {
        try String(contentsOf: root.appendingPathComponent(relativePath), encoding: .utf8)
    }

    /// README.md and every `docs/*.md`, as paths relative to the root.
    static func markdownFiles() throws -> [String] {
        let docs = try FileManager.default.contentsOfDirectory(atPath: root.appendingPathComponent("docs").path)
            .filter { $0.hasSuffix(".md") }.sorted().map { "docs/" + $0 }
        return ["README.md"] + docs
    }

    @Test("README.md has at most 250 lines")
    func readmeIsShort() throws {
        let lines = try Self.read("README.md").split(separator: "\n", omittingEmptySubsequences: false)
        let count = lines.last == "" ? lines.count - 1 : lines.count
        #expect(count <= 250, "README.md has \(count) lines")
        #expect(count > 20, "README.md has only \(count) lines")
    }

    @Test("the documentation set exists and the README links every document")
    func everyDocumentIsLinked() throws {
        let expected = ["configuration", "events", "operations", "metrics", "systemd", "security",
                        "design", "performance", "development"].map { "docs/\($0).md" }
        let present = try Self.markdownFiles()
        let readmeTargets = Set(Markdown.links(in: try Self.read("README.md")).map { $0.split(separator: "#").first.map(String.init) ?? "" })
        for doc in expected {
            #expect(present.contains(doc), "\(doc) is missing")
        }
        for doc in present where doc != "README.md" {
            #expect(readmeTargets.contains(doc), "README.md does not link \(doc)")
        }
        #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent("LICENSE").path))
    }

    @Test("every relative link in README.md and docs/*.md resolves, anchors included")
    func linksResolve() throws {
        var checked = 0
        for file in try Self.markdownFiles() {
            let text = try Self.read(file)
            let directory = (file as NSString).deletingLastPathComponent
            for link in Markdown.links(in: text) {
                if link.contains("://") || link.hasPrefix("mailto:") { continue }
                checked += 1
                let parts = link.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
                let pathPart = parts[0]
                let anchor = parts.count > 1 ? parts[1] : nil
                let target = pathPart.isEmpty ? file : Markdown.normalize(directory.isEmpty ? pathPart : directory + "/" + pathPart)
                var isDirectory: ObjCBool = false
                let exists = FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(target).path, isDirectory: &isDirectory)
                #expect(exists, "\(file): link \(link) points at \(target), which does not exist")
                guard exists, let anchor, target.hasSuffix(".md") else { continue }
                let anchors = Markdown.anchors(in: try Self.read(target))
                #expect(anchors.contains(anchor), "\(file): link \(link): \(target) has no heading #\(anchor)")
            }
        }
        #expect(checked > 20, "only \(checked) relative links found: is the link parser broken?")
    }

    @Test("docs/configuration.md documents exactly the keys the loader accepts")
    func configurationReferenceMatchesTheLoader() throws {
        let text = try Self.read("docs/configuration.md")
        let documented = Markdown.firstColumn(ofTablesUnder: "## Keys", in: text)
        #expect(documented.count == Set(documented).count, "a key is documented twice: \(documented)")
        #expect(Set(documented) == Set(RawConfig.acceptedKeyPaths),
                "documented but not accepted: \(Set(documented).subtracting(RawConfig.acceptedKeyPaths).sorted()); accepted but not documented: \(Set(RawConfig.acceptedKeyPaths).subtracting(documented).sorted())")
    }

    @Test("docs/configuration.md documents exactly the environment variables the loader reads")
    func environmentReferenceMatchesTheLoader() throws {
        let text = try Self.read("docs/configuration.md")
        let documented = Set(Markdown.firstColumn(ofTablesUnder: "## Environment variables", in: text))
        let fixed = Set(RawConfig.environmentVariables.map(\.variable))
        let regionPattern = ReplicatorConfig.dsnEnvironmentVariable(forRegion: "x").replacingOccurrences(of: "_X_", with: "_<NAME>_")
        #expect(documented == fixed.union([regionPattern, "CREDENTIALS_DIRECTORY"]),
                "documented but not read: \(documented.subtracting(fixed).sorted()); read but not documented: \(fixed.subtracting(documented).sorted())")
        // Each fixed variable is documented next to the key it replaces.
        for (variable, key) in RawConfig.environmentVariables {
            #expect(text.contains("| `\(variable)` | `\(key)` |"), "\(variable) is not documented as replacing \(key)")
        }
    }

    @Test("docs/configuration.md lists exactly the Kafka properties the loader refuses")
    func managedPropertiesMatchTheLoader() throws {
        let text = try Self.read("docs/configuration.md")
        let documented = Set(Markdown.firstColumn(ofTablesUnder: "### `kafka.properties`", in: text, allCodeSpans: true))
        #expect(documented == Set(RawConfig.managedKafkaProperties.keys).union(RawConfig.secretKafkaProperties.keys))
    }

    @Test("every repository path README.md and docs/*.md name in code spans exists")
    func namedPathsExist() throws {
        var checked = 0
        for file in try Self.markdownFiles() {
            for line in Markdown.prose(try Self.read(file), keepCode: true) {
                for match in line.matches(of: /`((?:Sources|Tests|scripts|monitoring|systemd|Fuzz|docs)\/[^`\s]*)`/) {
                    let path = String(match.output.1)
                    if path.contains("*") || path.contains("…") || path.contains("<") { continue }  // a pattern, not a path
                    checked += 1
                    #expect(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent(path).path),
                            "\(file) names \(path), which does not exist")
                }
            }
        }
        #expect(checked > 10, "only \(checked) paths found: is the matcher broken?")
    }

    @Test("the configurations shown in README.md and docs/configuration.md are accepted as written")
    func documentedConfigurationsParse() throws {
        // The README's minimal configuration names a systemd credential by a relative dsn_file.
        let credentials = NSTemporaryDirectory() + "rr-docs-credentials-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: credentials, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: credentials) }
        try "host=10.0.0.6 dbname=app user=replicator".write(toFile: credentials + "/region-replicator_us-east-1", atomically: true, encoding: .utf8)
        let environment = ["CREDENTIALS_DIRECTORY": credentials]
        for (file, heading) in [("README.md", "## A minimal configuration"), ("docs/configuration.md", "## Example")] {
            let blocks = Markdown.codeBlocks(language: "yaml", under: heading, in: try Self.read(file))
            #expect(blocks.count == 1, "\(file): expected one yaml block under \(heading), found \(blocks.count)")
            for yaml in blocks {
                do {
                    let config = try ReplicatorConfig.parse(yaml: yaml, path: "/etc/region-replicator/config.yaml", environment: environment)
                    #expect(!config.regions.isEmpty)
                } catch {
                    Issue.record("\(file), \(heading): \(error)")
                }
            }
        }
    }

    /// The marker of the document the project's external contract started in. Spelled in
    /// pieces so that this file does not match itself.
    static let externalDocument = "CON" + "TRACT"

    @Test("no tracked file cites a document outside the repository")
    func noExternalReferences() async throws {
        // Spawning git and reading every file blocks: off Swift's cooperative pool, which
        // timing-sensitive tests running beside this one (SystemdServiceTests) need.
        let (files, offenders) = try await Self.offThePool { () throws -> ([String], [String]) in
            let files = try Self.trackedFiles()
            let issueReference = /(?i)issue [0-9]/
            var offenders: [String] = []
            for file in files {
                guard let data = FileManager.default.contents(atPath: Self.root.appendingPathComponent(file).path),
                      !data.contains(0), let text = String(data: data, encoding: .utf8) else { continue }
                // The regex only where a cheap test says it may match.
                guard text.contains(Self.externalDocument) || text.lowercased().contains("issue ") else { continue }
                for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated()
                where line.contains(Self.externalDocument) || line.contains(issueReference) {
                    offenders.append("\(file):\(number + 1): \(line.prefix(120))")
                }
            }
            return (files, offenders)
        }
        #expect(files.count > 50, "only \(files.count) files found")
        #expect(files.contains("Sources/ReplicatorApp/Configuration/Config.swift"))
        #expect(offenders.isEmpty, "\(offenders.count) lines cite outside documents:\n\(offenders.joined(separator: "\n"))")
    }

    /// Runs blocking work on a thread of its own and waits for it without blocking a thread.
    static func offThePool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await BlockingThread.run(name: "docs-tests", body)
    }

    /// `git ls-files` when the root is a git work tree, else every file below the root except
    /// `.git` and build directories.
    static func trackedFiles() throws -> [String] {
        if FileManager.default.fileExists(atPath: root.appendingPathComponent(".git").path) {
            let git = Process()
            git.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            git.arguments = ["git", "-C", root.path, "ls-files", "-z"]
            let pipe = Pipe()
            git.standardOutput = pipe
            git.standardError = FileHandle.nullDevice
            if (try? git.run()) != nil {
                let data = pipe.fileHandleForReading.readDataToEndOfFile()
                git.waitUntilExit()
                if git.terminationStatus == 0 {
                    return data.split(separator: 0).compactMap { String(data: Data($0), encoding: .utf8) }
                }
            }
        }
        var files: [String] = []
        let enumerator = FileManager.default.enumerator(atPath: root.path)
        while let path = enumerator?.nextObject() as? String {
            let first = path.split(separator: "/").first.map(String.init) ?? path
            if first == ".git" || first.hasPrefix(".build") || first == ".venv" || first == "bench-results" {
                enumerator?.skipDescendants()
                continue
            }
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: root.appendingPathComponent(path).path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files.append(path)
            }
        }
        return files
    }
}

/// Just enough Markdown to check links: inline links outside code, and GitHub's heading anchors.
enum Markdown {
    /// The lines of `text` outside fenced code blocks, with inline code spans emptied unless
    /// `keepCode`.
    static func prose(_ text: String, keepCode: Bool = false) -> [String] {
        var inFence = false
        var lines: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") {
                inFence.toggle()
                continue
            }
            if inFence { continue }
            lines.append(keepCode ? String(line) : String(line.replacing(/`[^`]*`/, with: "``")))
        }
        return lines
    }

    /// The targets of inline links `[text](target)` and images.
    static func links(in text: String) -> [String] {
        prose(text).flatMap { line in
            line.matches(of: /\]\(([^)\s]+)(?:\s+"[^"]*")?\)/).map { String($0.output.1) }
        }
    }

    /// GitHub's anchors of the headings of `text`: lower-cased, punctuation other than `-` and
    /// `_` removed, spaces turned into `-`; repeated headings get `-1`, `-2`, ….
    static func anchors(in text: String) -> Set<String> {
        var inFence = false
        var seen: [String: Int] = [:]
        var result: Set<String> = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.trimmingCharacters(in: .whitespaces).hasPrefix("```") { inFence.toggle(); continue }
            guard !inFence, line.hasPrefix("#") else { continue }
            let title = line.drop { $0 == "#" }.trimmingCharacters(in: .whitespaces)
            let slug = String(title.lowercased().compactMap { c -> Character? in
                if c == " " { return "-" }
                if c.isLetter || c.isNumber || c == "-" || c == "_" { return c }
                return nil
            })
            let n = seen[slug, default: 0]
            seen[slug] = n + 1
            result.insert(n == 0 ? slug : "\(slug)-\(n)")
        }
        return result
    }

    /// The code spans of the first cell of each table row between `heading` and the next
    /// heading: the first span only, or all of them.
    static func firstColumn(ofTablesUnder heading: String, in text: String, allCodeSpans: Bool = false) -> [String] {
        var inside = false
        var result: [String] = []
        for line in prose(text, keepCode: true) {
            if line.hasPrefix("#") {
                if inside { break }
                if line == heading { inside = true }
                continue
            }
            guard inside, line.hasPrefix("|") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false)
            guard cells.count > 2 else { continue }
            let spans = cells[1].matches(of: /`([^`]+)`/).map { String($0.output.1) }
            result += allCodeSpans ? spans : Array(spans.prefix(1))
        }
        return result
    }

    /// The fenced code blocks tagged `language` between `heading` and the next heading.
    static func codeBlocks(language: String, under heading: String, in text: String) -> [String] {
        var inside = false
        var block: [Substring]? = nil  // the lines of the open block, nil outside a block
        var keep = false
        var blocks: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if block != nil {
                if line.hasPrefix("```") {
                    if keep { blocks.append(block!.joined(separator: "\n") + "\n") }
                    block = nil
                } else {
                    block!.append(line)
                }
                continue
            }
            if line.hasPrefix("```") {
                block = []
                keep = inside && line.dropFirst(3) == language
            } else if line.hasPrefix("#") {
                if inside { break }
                inside = line == heading
            }
        }
        return blocks
    }

    /// `a/./b/../c` → `a/c`.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for part in path.split(separator: "/") {
            if part == "." { continue }
            if part == "..", !parts.isEmpty, parts.last != ".." { parts.removeLast(); continue }
            parts.append(part)
        }
        return parts.joined(separator: "/")
    }
}
