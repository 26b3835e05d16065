import Foundation
import KafkaClient
import Logging
import ReplicationCore
import Testing

@testable import ReplicatorApp

@Suite("ConfigTests")
struct ConfigTests {
    static let path = "/etc/region-replicator/config.yaml"

    /// The example of docs/configuration.md, with a password in the DSN.
    static let documentedExample = """
        kafka:
          brokers: "127.0.0.1:9092"          # comma-separated bootstrap list
          topic: chat.messages
          group_prefix: region-replicator    # consumer group per region: "<group_prefix>.<region>"
          properties: {}                     # extra librdkafka properties, verbatim (security.protocol, sasl.*, ssl.*)
        regions:
          - name: eu-west-1
            dsn: "host=10.0.0.5 dbname=app user=replicator password=hunter2 sslmode=verify-full"   # libpq conninfo or URI
            # dsn_file: /run/credentials/region-replicator.service/eu-west-1      (instead of dsn)
        apply:
          table: messages
          max_batch_events: 1000
          max_batch_delay_ms: 20
          apply_to_origin: false
        http:
          listen: "127.0.0.1:9466"
        log:
          level: info                        # trace|debug|info|notice|warning|error|critical
          format: text                       # text|json

        """

    static let minimal = """
        regions:
          - name: eu-west-1
            dsn: "host=eu dbname=app password=hunter2"
          - name: us-east-1
            dsn: "postgres://replicator:hunter2@us/app"

        """

    func parse(_ yaml: String, env: [String: String] = [:], path: String = ConfigTests.path) throws(ConfigError) -> ReplicatorConfig {
        try ReplicatorConfig.parse(yaml: yaml, path: path, environment: env)
    }

    /// The error `yaml` gives; fails the test when it parses.
    func failure(
        _ yaml: String, env: [String: String] = [:], path: String = ConfigTests.path,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> ConfigError? {
        let error = #expect(throws: ConfigError.self, sourceLocation: sourceLocation) {
            try ReplicatorConfig.parse(yaml: yaml, path: path, environment: env)
        }
        if let error {
            #expect(!error.description.contains("hunter2"), "error leaks a password: \(error)", sourceLocation: sourceLocation)
        }
        return error
    }

    func temporaryDirectory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("config-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    // MARK: - Valid files

    @Test func documentedExampleParses() throws {
        let config = try parse(Self.documentedExample)
        #expect(config.path == Self.path)
        #expect(config.kafka.brokers == "127.0.0.1:9092")
        #expect(config.kafka.topic == "chat.messages")
        #expect(config.kafka.groupPrefix == "region-replicator")
        #expect(config.kafka.properties.isEmpty)
        #expect(config.regions.count == 1)
        #expect(config.regions[0].name == "eu-west-1")
        #expect(config.regions[0].dsn.value == "host=10.0.0.5 dbname=app user=replicator password=hunter2 sslmode=verify-full")
        #expect(config.apply.table.name == "messages")
        #expect(config.apply.table.schema == nil)
        #expect(config.apply.maxBatchEvents == 1000)
        #expect(config.apply.maxBatchDelayMs == 20)
        #expect(config.apply.applyToOrigin == false)
        #expect(config.apply.connections == 2)  // the default: two pipelines per region
        #expect(config.http.listen == "127.0.0.1:9466")
        #expect(config.http.hostAndPort?.host == "127.0.0.1")
        #expect(config.http.hostAndPort?.port == 9466)
        #expect(config.log.level == .info)
        #expect(config.log.format == .text)
        #expect(config.consumerGroup(for: config.regions[0]) == "region-replicator.eu-west-1")
    }

    @Test func defaultsWhenSectionsAreOmitted() throws {
        let config = try parse(Self.minimal)
        #expect(config.kafka.brokers == "127.0.0.1:9092")
        #expect(config.kafka.topic == "chat.messages")
        #expect(config.kafka.groupPrefix == "region-replicator")
        #expect(config.kafka.properties == [:])
        #expect(config.regions.map(\.name) == ["eu-west-1", "us-east-1"])
        #expect(config.apply.table.description == "messages")
        #expect(config.apply.maxBatchEvents == 1000)
        #expect(config.apply.maxBatchDelayMs == 20)
        #expect(config.apply.maxBatchBytes == 8 << 20)
        #expect(config.apply.applyToOrigin == false)
        #expect(config.http.listen == "127.0.0.1:9466")
        #expect(config.log.level == .info)
        #expect(config.log.format == .text)
    }

    @Test func applyConnectionsFromTheFileAndTheEnvironment() throws {
        #expect(try parse(Self.minimal + "apply:\n  connections: 4\n").apply.connections == 4)
        #expect(try parse(Self.minimal + "apply:\n  connections: 4\n", env: ["REGION_REPLICATOR_APPLY_CONNECTIONS": "16"]).apply.connections == 16)
    }

    @Test func emptySectionsMeanDefaults() throws {
        let config = try parse("kafka:\napply:\nhttp: {}\nlog: ~\n" + Self.minimal)
        #expect(config.kafka.topic == "chat.messages")
        #expect(config.apply.maxBatchEvents == 1000)
        #expect(config.http.listen == "127.0.0.1:9466")
        #expect(config.log.level == .info)
    }

    @Test func everyValueCanBeSet() throws {
        let config = try parse("""
            kafka:
              brokers: "k1:9092, k2:9092"
              topic: chat_events.v2
              group_prefix: rr
              properties:
                security.protocol: SASL_SSL
                sasl.oauthbearer.config: s3cret-kafka
                linger.ms: 5
                enable.idempotence: true
                client.id: 1.50
                acks: "all"
            regions:
              - {name: a.b_c-1, dsn: "host=a password=hunter2"}
            apply:
              table: app.chat_messages
              max_batch_events: 100_000
              max_batch_delay_ms: 0
              apply_to_origin: yes
            http:
              listen: "[::1]:9466"
            log:
              level: critical
              format: json
            """)
        #expect(config.kafka.brokers == "k1:9092, k2:9092")
        #expect(config.kafka.topic == "chat_events.v2")
        #expect(config.kafka.groupPrefix == "rr")
        #expect(config.kafka.properties == [
            "security.protocol": "SASL_SSL", "sasl.oauthbearer.config": "s3cret-kafka", "linger.ms": "5",
            "enable.idempotence": "true", "client.id": "1.50", "acks": "all",
        ])
        #expect(config.consumerGroup(for: config.regions[0]) == "rr.a.b_c-1")
        #expect(config.apply.table.schema == "app")
        #expect(config.apply.table.name == "chat_messages")
        #expect(config.apply.maxBatchEvents == 100_000)
        #expect(config.apply.maxBatchDelayMs == 0)
        #expect(config.apply.applyToOrigin)
        #expect(config.http.hostAndPort?.host == "::1")
        #expect(config.http.hostAndPort?.port == 9466)
        #expect(config.log.level == .critical)
        #expect(config.log.format == .json)
        // Sensitive Kafka properties are redacted when the configuration is printed.
        #expect(!"\(config)".contains("s3cret-kafka"))
        #expect("\(config)".contains("security.protocol=SASL_SSL"))
    }

    @Test func regionLookup() throws {
        let config = try parse(Self.minimal)
        #expect(try config.region(named: "us-east-1").dsn.value == "postgres://replicator:hunter2@us/app")
        let error = #expect(throws: ConfigError.self) { try config.region(named: "ap-south-1") }
        #expect(error?.description == "\(Self.path): unknown region \"ap-south-1\" (configured regions: eu-west-1, us-east-1)")
    }

    // MARK: - Unknown keys

    @Test func unknownTopLevelKey() {
        let error = failure("kafak:\n  topic: x\n" + Self.minimal)
        #expect(error?.key == "kafak")
        #expect(error?.description == "\(Self.path): kafak: unknown key (known keys: kafka, regions, apply, http, log, verify, capture)")
    }

    @Test("verify: off by default; keys parsed and range-checked, naming the key")
    func verifySection() throws {
        let defaults = try parse(Self.minimal)
        #expect(defaults.verify == ReplicatorConfig.Verify())
        #expect(!defaults.verify.enabled && defaults.verify.intervalSeconds == 600 && defaults.verify.slices == 64)
        let on = try parse(Self.minimal + "verify:\n  enabled: true\n  interval_seconds: 30\n  slices: 8\n  max_items_per_second: 5000\n  settle_timeout_seconds: 0\n")
        #expect(on.verify.enabled && on.verify.intervalSeconds == 30 && on.verify.slices == 8)
        #expect(on.verify.maxItemsPerSecond == 5000 && on.verify.settleTimeoutSeconds == 0)
        let bad = failure(Self.minimal + "verify:\n  slices: 0\n")
        #expect(bad?.description == "\(Self.path): verify.slices: must be between 1 and 4096, got 0")
        #expect(failure(Self.minimal + "verify:\n  enable: true\n")?.key == "verify.enable")
    }

    @Test("capture: off by default; per-region override; slot names and the publication validated")
    func captureSection() throws {
        let defaults = try parse(Self.minimal)
        #expect(defaults.capture == ReplicatorConfig.Capture() && !defaults.captures(defaults.regions[0]))
        let two = """
            regions:
              - name: eu-west-1
                dsn: "host=eu"
              - name: us-east-1
                dsn: "host=us"
                capture: false

            """
        let on = try parse(two + "capture:\n  enabled: true\n  slot_prefix: rr_test\n  publication: rr_pub\n")
        #expect(on.regions.map { on.captures($0) } == [true, false])
        #expect(on.capture.slotName(for: "eu-west-1") == "rr_test_eu_west_1" && on.capture.publication == "rr_pub")
        let onlyOne = try parse(two.replacingOccurrences(of: "capture: false", with: "capture: true"))
        #expect(onlyOne.regions.map { onlyOne.captures($0) } == [false, true])
        #expect(try parse(two, env: ["REGION_REPLICATOR_CAPTURE_ENABLED": "true"]).captures(on.regions[0]))
        #expect(failure(Self.minimal + "capture:\n  slot_prefix: Bad-Name\n")?.key == "capture.slot_prefix")
        let long = failure(Self.minimal + "capture:\n  enabled: true\n  slot_prefix: \(String(repeating: "s", count: 60))\n")
        #expect(long?.description.contains("longer than 63 bytes") == true, "\(String(describing: long))")
        #expect(failure(Self.minimal + "capture:\n  publication: \"p; DROP\"\n")?.key == "capture.publication")
        #expect(failure(Self.minimal + "capture:\n  enable: true\n")?.key == "capture.enable")
        #expect(failure(two + "capture:\n  enabled: yes please\n")?.key == "capture.enabled")
    }

    @Test func unknownNestedKey() {
        let error = failure(Self.minimal + "apply:\n  max_batch_evnts: 10\n")
        #expect(error?.key == "apply.max_batch_evnts")
        #expect(error?.description
            == "/etc/region-replicator/config.yaml: apply.max_batch_evnts: unknown key (known keys: table, max_batch_events, max_batch_delay_ms, max_batch_bytes, apply_to_origin, columns, attributes_column, connections, statement_timeout_ms, lock_timeout_ms)")
    }

    @Test("apply.columns and apply.attributes_column map event fields onto an existing table")
    func columnMapping() throws {
        let config = try parse(Self.minimal + """
            apply:
              table: app.chat
              attributes_column: extra
              columns:
                message_id: id
                content: body
                replicated_at: null

            """)
        let c = config.apply.columns
        #expect(c.messageID == "id" && c.content == "body" && c.sessionID == "session_id" && c.version == "version")
        #expect(c.replicatedAt == nil && c.attributes == "extra")
        #expect(try parse(Self.minimal).apply.columns == .standard)
    }

    @Test("Column names are validated identifiers; unknown fields and shared columns are refused")
    func columnMappingErrors() {
        let bad = failure(Self.minimal + "apply:\n  columns:\n    content: \"body; DROP TABLE x\"\n")
        #expect(bad?.key == "apply.columns.content")
        #expect(bad?.description.contains("identifiers may contain only letters, digits and `_`") == true, "\(String(describing: bad))")
        let unknown = failure(Self.minimal + "apply:\n  columns:\n    body: content\n")
        #expect(unknown?.key == "apply.columns.body")
        let shared = failure(Self.minimal + "apply:\n  columns:\n    content: role\n")
        #expect(shared?.description.contains("the same column is mapped to two event fields") == true, "\(String(describing: shared))")
        let attrs = failure(Self.minimal + "apply:\n  attributes_column: a.b\n")
        #expect(attrs?.key == "apply.attributes_column")
    }

    @Test func unknownKeyInRegionItem() {
        let error = failure("""
            regions:
              - name: eu-west-1
                dsn: "password=hunter2"
              - name: us-east-1
                dns: "password=hunter2"
            """)
        #expect(error?.key == "regions[1].dns")
        #expect(error?.description.hasPrefix("\(Self.path): regions[1].dns: unknown key") == true)
        #expect(error?.description.contains("name, dsn, dsn_file") == true)
    }

    @Test func mergeKeysAreUnknownKeys() {
        let error = failure("base: &b {topic: x}\n" + Self.minimal)
        #expect(error?.key == "base")
    }

    // MARK: - Regions

    @Test func missingRegions() {
        let error = failure("kafka:\n  topic: x\n")
        #expect(error?.key == "regions")
        #expect(error?.description.hasPrefix("\(Self.path): regions: required key is missing") == true)
    }

    @Test func emptyRegions() {
        #expect(failure("regions: []\n")?.key == "regions")
        #expect(failure("regions:\n")?.key == "regions")
        #expect(failure("regions: {name: x}\n")?.message.contains("expected a sequence") == true)
    }

    @Test func regionItemProblems() {
        #expect(failure("regions:\n  - eu-west-1\n")?.key == "regions[0]")
        #expect(failure("regions:\n  - dsn: \"password=hunter2\"\n")?.key == "regions[0].name")
        let neither = failure("regions:\n  - name: eu-west-1\n")
        #expect(neither?.key == "regions[0]")
        #expect(neither?.message.contains("REGION_REPLICATOR_REGION_EU_WEST_1_DSN") == true)
        let empty = failure("regions:\n  - name: eu-west-1\n    dsn: \"  \"\n")
        #expect(empty?.key == "regions[0].dsn")
        #expect(failure("regions:\n  - name: eu-west-1\n    dsn: [password=hunter2]\n")?.key == "regions[0].dsn")
    }

    @Test(arguments: ["-eu", "eu west", "", "a/b", String(repeating: "a", count: 64), "ü"])
    func invalidRegionNames(name: String) {
        let error = failure("regions:\n  - name: \"\(name)\"\n    dsn: \"password=hunter2\"\n")
        #expect(error?.key == "regions[0].name")
    }

    @Test func duplicateRegionNames() {
        let error = failure("""
            regions:
              - {name: eu-west-1, dsn: "password=hunter2"}
              - {name: us-east-1, dsn: "password=hunter2"}
              - {name: eu-west-1, dsn: "password=hunter2"}
            """)
        #expect(error?.key == "regions[2].name")
        #expect(error?.message.contains("regions[0].name") == true)
    }

    @Test func bothDSNAndDSNFile() {
        let error = failure("""
            regions:
              - name: eu-west-1
                dsn: "host=a password=hunter2"
                dsn_file: eu-west-1
            """)
        #expect(error?.key == "regions[0]")
        #expect(error?.message.contains("dsn_file") == true)
    }

    // MARK: - dsn_file

    @Test func dsnFileRelativeToCredentialsDirectory() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "\n  host=db password=hunter2  \n\n".write(
            to: directory.appendingPathComponent("eu-west-1"), atomically: true, encoding: .utf8)
        let yaml = "regions:\n  - name: eu-west-1\n    dsn_file: eu-west-1\n"
        let config = try parse(yaml, env: ["CREDENTIALS_DIRECTORY": directory.path])
        #expect(config.regions[0].dsn.value == "host=db password=hunter2")
        #expect(!"\(config)".contains("hunter2"))
    }

    @Test func dsnFileRelativeToConfigDirectoryAndAbsolute() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        try "host=one password=hunter2\n".write(to: directory.appendingPathComponent("one.dsn"), atomically: true, encoding: .utf8)
        let absolute = directory.appendingPathComponent("two.dsn")
        try "host=two password=hunter2".write(to: absolute, atomically: true, encoding: .utf8)
        let configPath = directory.appendingPathComponent("config.yaml").path
        try """
            regions:
              - {name: one, dsn_file: one.dsn}
              - {name: two, dsn_file: "\(absolute.path)"}
            """.write(toFile: configPath, atomically: true, encoding: .utf8)
        let config = try ReplicatorConfig.load(path: configPath, environment: [:])
        #expect(config.path == configPath)
        #expect(config.regions.map(\.dsn.value) == ["host=one password=hunter2", "host=two password=hunter2"])
    }

    @Test func unreadableOrEmptyDSNFile() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let missing = failure(
            "regions:\n  - name: eu-west-1\n    dsn_file: nope\n", env: ["CREDENTIALS_DIRECTORY": directory.path])
        #expect(missing?.key == "regions[0].dsn_file")
        #expect(missing?.message.contains(directory.appendingPathComponent("nope").path) == true)
        #expect(missing?.message.contains("No such file") == true)

        try "  \n".write(to: directory.appendingPathComponent("blank"), atomically: true, encoding: .utf8)
        let blank = failure("regions:\n  - name: eu-west-1\n    dsn_file: blank\n", env: ["CREDENTIALS_DIRECTORY": directory.path])
        #expect(blank?.key == "regions[0].dsn_file")
        #expect(blank?.message.contains("empty") == true)
    }

    // MARK: - Invalid files

    @Test func invalidYAML() {
        let error = failure("regions:\n  - name: eu-west-1\n    dsn: \"password=hunter2\n  bad: [\n")
        #expect(error?.key == nil)
        #expect(error?.message.contains("invalid YAML at line") == true)
        #expect(error?.description.hasPrefix("\(Self.path): invalid YAML") == true)

        let mapping = failure("regions:\n  - name: x\n   dsn: password=hunter2\n")
        #expect(mapping?.message.contains("line 3") == true)

        let control = failure("regions: []\nkafka: [x\u{1}]\n")
        #expect(control?.message == "invalid YAML at line 2, column 10: control characters are not allowed")
    }

    @Test func duplicateYAMLKeysDoNotEchoTheDocument() {
        let error = failure("regions:\n  - name: x\n    dsn: password=hunter2\n    dsn: password=hunter2\n")
        #expect(error?.key == nil)
        #expect(error?.message.contains("duplicate key \"dsn\"") == true)
    }

    @Test func emptyFileOrNotAMapping() {
        #expect(failure("")?.key == nil)
        #expect(failure("# only a comment\n")?.message.contains("empty") == true)
        #expect(failure("- a\n- b\n")?.message.contains("got a sequence") == true)
        #expect(failure("just a string\n")?.message.contains("top level") == true)
    }

    @Test func loadMissingFile() {
        let error = #expect(throws: ConfigError.self) {
            try ReplicatorConfig.load(path: "/nonexistent/region-replicator.yaml", environment: [:])
        }
        #expect(error?.description == "/nonexistent/region-replicator.yaml: cannot read configuration file: No such file or directory")
    }

    @Test(arguments: ["messages; drop table x", "a.b.c", "1abc", String(repeating: "m", count: 64), "", "app.", "\"quoted\""])
    func unsafeTableNames(table: String) {
        let yaml = Self.minimal + "apply:\n  table: '\(table)'\n"
        let error = failure(yaml)
        #expect(error?.key == "apply.table")
        #expect(error?.description.hasPrefix("\(Self.path): apply.table: invalid table name") == true)
    }

    @Test func wrongTypes() {
        let lots = failure(Self.minimal + "apply:\n  max_batch_events: lots\n")
        #expect(lots?.key == "apply.max_batch_events")
        #expect(lots?.message == "expected an integer, got \"lots\"")
        #expect(failure(Self.minimal + "apply:\n  max_batch_events: 1.5\n")?.key == "apply.max_batch_events")
        #expect(failure(Self.minimal + "apply:\n  max_batch_delay_ms: [1]\n")?.message == "expected an integer, got a sequence")
        #expect(failure(Self.minimal + "apply:\n  apply_to_origin: maybe\n")?.message.contains("expected a boolean") == true)
        #expect(failure(Self.minimal + "apply:\n  apply_to_origin: \"true\"\n")?.key == "apply.apply_to_origin")
        #expect(failure(Self.minimal + "kafka:\n  topic: {a: b}\n")?.message == "expected a string, got a mapping")
        #expect(failure(Self.minimal + "kafka:\n  topic:\n")?.message == "expected a string, got null")
        #expect(failure(Self.minimal + "kafka: [a]\n")?.key == "kafka")
        #expect(failure(Self.minimal + "kafka:\n  properties: [a]\n")?.key == "kafka.properties")
        let nested = failure(Self.minimal + "kafka:\n  properties:\n    sasl:\n      password: hunter2\n")
        #expect(nested?.key == "kafka.properties.sasl")
    }

    @Test func groupInstanceID() throws {
        // Off by default: dynamic membership.
        let plain = try parse(Self.minimal)
        #expect(plain.kafka.groupInstanceID == nil)
        #expect(plain.groupInstanceID(for: plain.regions[0]) == nil)

        // Each region's consumer gets "<id>.<region>"; the environment overrides the file.
        let set = try parse(Self.minimal + "kafka:\n  group_instance_id: host-a\n")
        #expect(set.regions.map { set.groupInstanceID(for: $0) } == ["host-a.eu-west-1", "host-a.us-east-1"])
        let env = try parse(Self.minimal + "kafka:\n  group_instance_id: host-a\n",
                            env: ["REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID": "host-b"])
        #expect(env.groupInstanceID(for: env.regions[0]) == "host-b.eu-west-1")
        #expect(set.description.contains("group_instance_id: host-a"))

        // Bad ids, and group.instance.id set as a raw property, name the key.
        #expect(failure(Self.minimal + "kafka:\n  group_instance_id: \"\"\n")?.key == "kafka.group_instance_id")
        #expect(failure(Self.minimal + "kafka:\n  group_instance_id: \"a b\"\n")?.key == "kafka.group_instance_id")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID": String(repeating: "h", count: 201)])?.key
                == "REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID")
        let raw = failure(Self.minimal + "kafka:\n  properties:\n    group.instance.id: x\n")
        #expect(raw?.key == "kafka.properties.group.instance.id")
        #expect(raw?.message.contains("kafka.group_instance_id") == true)
    }

    @Test func consumerDefaultsYieldToProperties() throws {
        func settings(_ properties: [(String, String)], instance: String? = nil) -> PipelineSettings {
            PipelineSettings(region: "eu", conninfo: "", kafka: KafkaConfiguration(properties), topic: "t", consumerGroup: "g",
                             table: try! TableName(validating: "messages"), applyToOrigin: false, maxBatchEvents: 1,
                             maxBatchDelay: .zero, groupInstanceID: instance)
        }
        // librdkafka applies properties in order: the last one wins.
        func effective(_ s: PipelineSettings, _ name: String) -> String? {
            s.consumerConfiguration.properties.last { $0.0 == name }?.1
        }
        #expect(effective(settings([]), "session.timeout.ms") == "10000")
        #expect(effective(settings([("session.timeout.ms", "30000")]), "session.timeout.ms") == "30000")
        #expect(effective(settings([]), "group.instance.id") == nil)
        #expect(effective(settings([], instance: "host-a.eu"), "group.instance.id") == "host-a.eu")
    }

    @Test func fencedStaticMemberIsAConfigurationError() {
        let fenced = PipelineError.fatalKafka(KafkaError(code: .fencedInstanceID, message: "fatal: broker: static consumer fenced"),
                                              region: "eu", groupInstanceID: "host-a.eu")
        #expect(fenced.isConfigurationProblem)
        #expect(fenced.description.contains("another running instance has the same kafka.group_instance_id"))
        #expect(fenced.description.contains("host-a.eu"))
        let other = PipelineError.fatalKafka(KafkaError(code: .invalidConfiguration, message: "x"), region: "eu", groupInstanceID: nil)
        #expect(!other.isConfigurationProblem)
    }

    @Test func outOfRangeAndBadValues() {
        let long = String(repeating: "x", count: 100)
        #expect(failure(Self.minimal + "apply:\n  max_batch_events: 0\n")?.message == "must be between 1 and 100000, got 0")
        #expect(failure(Self.minimal + "apply:\n  max_batch_events: 100001\n")?.key == "apply.max_batch_events")
        #expect(failure(Self.minimal + "apply:\n  max_batch_delay_ms: -1\n")?.key == "apply.max_batch_delay_ms")
        #expect(failure(Self.minimal + "apply:\n  max_batch_delay_ms: 60001\n")?.key == "apply.max_batch_delay_ms")
        #expect(failure(Self.minimal + "apply:\n  max_batch_bytes: 65535\n")?.message == "must be between 65536 and 268435456, got 65535")
        #expect(failure(Self.minimal + "apply:\n  max_batch_bytes: 268435457\n")?.key == "apply.max_batch_bytes")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_MAX_BATCH_BYTES": "1"])?.key == "REGION_REPLICATOR_APPLY_MAX_BATCH_BYTES")
        #expect(failure(Self.minimal + "apply:\n  connections: 0\n")?.message == "must be between 1 and 16, got 0")
        #expect(failure(Self.minimal + "apply:\n  connections: 17\n")?.key == "apply.connections")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_CONNECTIONS": "x"])?.key == "REGION_REPLICATOR_APPLY_CONNECTIONS")
        #expect(failure(Self.minimal + "kafka:\n  topic: \"\"\n")?.key == "kafka.topic")
        #expect(failure(Self.minimal + "kafka:\n  topic: \"a b\"\n")?.key == "kafka.topic")
        #expect(failure(Self.minimal + "kafka:\n  group_prefix: \"\"\n")?.key == "kafka.group_prefix")
        #expect(failure(Self.minimal + "kafka:\n  brokers: \"\"\n")?.key == "kafka.brokers")
        #expect(failure(Self.minimal + "kafka:\n  brokers: \"a:1,,b:2\"\n")?.key == "kafka.brokers")
        let level = failure(Self.minimal + "log:\n  level: \(long)\n")
        #expect(level?.key == "log.level")
        #expect(level?.message.contains(String(repeating: "x", count: 60) + "…\"") == true)
        #expect(level?.message.contains(String(repeating: "x", count: 61)) == false)
        #expect(failure(Self.minimal + "log:\n  format: xml\n")?.key == "log.format")
    }

    @Test(arguments: ["127.0.0.1:9466", "0.0.0.0:1", "localhost:65535", "[::1]:9466", "[::]:80", "[fe80::1%eth0]:9466"])
    func validListenAddresses(listen: String) throws {
        let config = try parse(Self.minimal + "http:\n  listen: \"\(listen)\"\n")
        #expect(config.http.listen == listen)
        #expect(config.http.hostAndPort != nil)
    }

    @Test(arguments: ["localhost", "::1:9466", ":9466", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "[::1]9466", "[::1]:", "a b:80", "[zz]:80"])
    func invalidListenAddresses(listen: String) {
        let error = failure(Self.minimal + "http:\n  listen: \"\(listen)\"\n")
        #expect(error?.key == "http.listen")
    }

    // MARK: - Environment overrides

    @Test func environmentOverrides() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let yaml = """
            regions:
              - name: eu-west-1
                dsn_file: does-not-exist    # replaced by the environment, so never read
              - name: us.east_1
                dsn: "host=us password=hunter2"
            """
        let config = try parse(yaml, env: [
            "REGION_REPLICATOR_KAFKA_BROKERS": "b1:9092,b2:9092",
            "REGION_REPLICATOR_KAFKA_TOPIC": "other.topic",
            "REGION_REPLICATOR_KAFKA_GROUP_PREFIX": "rr-test",
            "REGION_REPLICATOR_APPLY_TABLE": "app.msgs",
            "REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS": "500",
            "REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS": "0",
            "REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN": "TRUE",
            "REGION_REPLICATOR_HTTP_LISTEN": "0.0.0.0:9999",
            "REGION_REPLICATOR_LOG_LEVEL": "debug",
            "REGION_REPLICATOR_LOG_FORMAT": "json",
            "REGION_REPLICATOR_REGION_EU_WEST_1_DSN": "host=env password=hunter2",
            "REGION_REPLICATOR_CONFIG": "/somewhere/else.yaml",  // not ours: ignored
            "CREDENTIALS_DIRECTORY": directory.path,
        ])
        #expect(config.kafka.brokers == "b1:9092,b2:9092")
        #expect(config.kafka.topic == "other.topic")
        #expect(config.kafka.groupPrefix == "rr-test")
        #expect(config.apply.table.description == "app.msgs")
        #expect(config.apply.maxBatchEvents == 500)
        #expect(config.apply.maxBatchDelayMs == 0)
        #expect(config.apply.applyToOrigin)
        #expect(config.http.listen == "0.0.0.0:9999")
        #expect(config.log.level == .debug)
        #expect(config.log.format == .json)
        #expect(config.regions[0].dsn.value == "host=env password=hunter2")
        #expect(config.regions[1].dsn.value == "host=us password=hunter2")
        #expect(ReplicatorConfig.dsnEnvironmentVariable(forRegion: "us.east_1") == "REGION_REPLICATOR_REGION_US_EAST_1_DSN")
        #expect(ReplicatorConfig.dsnEnvironmentVariable(forRegion: "eu-west-1") == "REGION_REPLICATOR_REGION_EU_WEST_1_DSN")
    }

    @Test func environmentSuppliesAMissingDSN() throws {
        let config = try parse("regions:\n  - name: eu-west-1\n", env: ["REGION_REPLICATOR_REGION_EU_WEST_1_DSN": "password=hunter2"])
        #expect(config.regions[0].dsn.value == "password=hunter2")
    }

    @Test func badEnvironmentValues() {
        let integer = failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS": "lots"])
        #expect(integer?.file == Self.path)
        #expect(integer?.key == "REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS")
        #expect(integer?.description == "\(Self.path): REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS: expected an integer, got \"lots\"")

        let range = failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS": "60001"])
        #expect(range?.key == "REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN": "sometimes"])?.key
            == "REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_APPLY_TABLE": "x; drop table y"])?.key == "REGION_REPLICATOR_APPLY_TABLE")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_HTTP_LISTEN": "nope"])?.key == "REGION_REPLICATOR_HTTP_LISTEN")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_LOG_LEVEL": "loud"])?.key == "REGION_REPLICATOR_LOG_LEVEL")
        #expect(failure(Self.minimal, env: ["REGION_REPLICATOR_KAFKA_TOPIC": ""])?.key == "REGION_REPLICATOR_KAFKA_TOPIC")
        let dsn = failure(Self.minimal, env: ["REGION_REPLICATOR_REGION_US_EAST_1_DSN": " "])
        #expect(dsn?.key == "REGION_REPLICATOR_REGION_US_EAST_1_DSN")
    }

    @Test func unknownEnvironmentVariables() {
        let typo = failure(Self.minimal, env: ["REGION_REPLICATOR_KAFKA_BROKER": "x:1"])
        #expect(typo?.key == "REGION_REPLICATOR_KAFKA_BROKER")
        #expect(typo?.message.contains("REGION_REPLICATOR_KAFKA_BROKERS") == true)

        let region = failure(Self.minimal, env: ["REGION_REPLICATOR_REGION_AP_SOUTH_1_DSN": "password=hunter2"])
        #expect(region?.key == "REGION_REPLICATOR_REGION_AP_SOUTH_1_DSN")
        #expect(region?.message.contains("REGION_REPLICATOR_REGION_EU_WEST_1_DSN") == true)

        let ambiguous = failure(
            "regions:\n  - {name: eu-west-1, dsn: a}\n  - {name: eu.west.1, dsn: b}\n",
            env: ["REGION_REPLICATOR_REGION_EU_WEST_1_DSN": "password=hunter2"])
        #expect(ambiguous?.message.contains("ambiguous") == true)
    }

    // MARK: - Secrets

    @Test func secretsAreNeverPrinted() throws {
        let secret = Secret("password=hunter2")
        #expect(secret.value == "password=hunter2")
        #expect(secret.description == "<redacted>")
        #expect(!"\(secret)".contains("hunter2"))
        #expect(!String(reflecting: secret).contains("hunter2"))
        var dumped = ""
        dump(secret, to: &dumped)
        #expect(!dumped.contains("hunter2"))

        let config = try parse(Self.minimal)
        #expect(!"\(config)".contains("hunter2"))
        #expect(!String(reflecting: config).contains("hunter2"))
        #expect(!"\(config.regions)".contains("hunter2"))
        #expect(!String(reflecting: config.regions[0]).contains("hunter2"))
        #expect("\(config)".contains("eu-west-1"))
        var dumpedConfig = ""
        dump(config, to: &dumpedConfig)
        #expect(!dumpedConfig.contains("hunter2"))
    }

    @Test func errorsNeverQuoteADSN() {
        // A YAML error on the line with the password: Yams' own message would echo that line.
        let scanner = failure("regions:\n  - name: eu\n    dsn: password=hunter2: oops\n")
        #expect(scanner?.key == nil)
        // A non-string DSN.
        #expect(failure("regions:\n  - name: eu\n    dsn: {password: hunter2}\n")?.key == "regions[0].dsn")
        // A DSN placed under a wrong key.
        #expect(failure("regions:\n  - name: eu\n    dsn_fil: password=hunter2\n")?.key == "regions[0].dsn_fil")
    }
}


@Suite("Kafka properties the replicator manages")
struct ManagedKafkaPropertyTests {
    @Test("Overriding a managed librdkafka property is a configuration error naming it",
          arguments: ["enable.auto.commit", "group.id", "enable.auto.offset.store", "bootstrap.servers"])
    func managedPropertyRejected(_ name: String) {
        let yaml = """
            kafka:
              properties:
                \(name): "x"
            regions:
              - name: eu-west-1
                dsn: "host=h dbname=d password=hunter2"
            """
        do {
            _ = try ReplicatorConfig.parse(yaml: yaml, path: "/etc/rr.yaml", environment: [:])
            Issue.record("\(name) was accepted")
        } catch {
            #expect(error.description.contains("kafka.properties.\(name)"), "\(error)")
            #expect(error.description.contains("/etc/rr.yaml"))
            #expect(!error.description.contains("hunter2"))
        }
    }
    @Test("Every property is judged by librdkafka at load: a misspelt name or a refused value names the key, never the value",
          arguments: [("sasl.pasword", "hunter2-kafka", "no such property"),
                      ("security.protocol", "SASL_SSLhunter2", "refuses this value"),
                      ("fetch.max.bytes", "hunter2", "refuses this value")])
    func librdkafkaJudgesEveryProperty(_ name: String, _ value: String, _ why: String) {
        let yaml = """
            kafka:
              properties:
                sasl.username: region-replicator
                \(name): "\(value)"
            regions:
              - name: eu-west-1
                dsn: "host=h dbname=d"
            """
        do {
            _ = try ReplicatorConfig.parse(yaml: yaml, path: "/etc/rr.yaml", environment: [:])
            Issue.record("\(name): \(value) was accepted")
        } catch {
            #expect(error.description.contains("/etc/rr.yaml: kafka.properties.\(name)"), "\(error)")
            #expect(error.description.contains(why), "\(error)")
            #expect(!error.description.contains("hunter2"), "\(error)")
        }
    }

    @Test("A SASL_SSL client configuration as in docs/security.md is accepted verbatim, its password from a credential")
    func saslSSLExampleIsAccepted() throws {
        let credentials = try ConfigTests().temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: credentials) }
        try "change-me\n".write(to: credentials.appendingPathComponent("region-replicator_kafka-sasl-password"), atomically: true, encoding: .utf8)
        let config = try ReplicatorConfig.parse(yaml: """
            kafka:
              brokers: "kafka-1.example.net:9093,kafka-2.example.net:9093"
              sasl_password_file: region-replicator_kafka-sasl-password   # /etc/region-replicator/credentials/kafka-sasl-password
              properties:
                security.protocol: SASL_SSL
                sasl.mechanisms: SCRAM-SHA-512
                sasl.username: region-replicator
                ssl.ca.location: /etc/region-replicator/kafka-ca.pem
                ssl.endpoint.identification.algorithm: https
            regions:
              - name: eu-west-1
                dsn: "host=h dbname=d"
            """, path: "/etc/rr.yaml", environment: ["CREDENTIALS_DIRECTORY": credentials.path])
        #expect(config.kafka.properties["sasl.mechanisms"] == "SCRAM-SHA-512")
        #expect(config.kafka.properties["sasl.password"] == "change-me")
        #expect(config.kafka.properties.count == 6)
    }
}
