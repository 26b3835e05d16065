/// Environment overrides of the configuration file. The variables are documented in
/// docs/configuration.md.
extension RawConfig {
    static let environmentPrefix = "REGION_REPLICATOR_"

    /// Every fixed override variable with the key it replaces (for "unknown variable" errors).
    static let environmentVariables: [(variable: String, key: String)] = [
        ("REGION_REPLICATOR_KAFKA_BROKERS", "kafka.brokers"),
        ("REGION_REPLICATOR_KAFKA_TOPIC", "kafka.topic"),
        ("REGION_REPLICATOR_KAFKA_GROUP_PREFIX", "kafka.group_prefix"),
        ("REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID", "kafka.group_instance_id"),
        ("REGION_REPLICATOR_APPLY_TABLE", "apply.table"),
        ("REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS", "apply.max_batch_events"),
        ("REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS", "apply.max_batch_delay_ms"),
        ("REGION_REPLICATOR_APPLY_MAX_BATCH_BYTES", "apply.max_batch_bytes"),
        ("REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN", "apply.apply_to_origin"),
        ("REGION_REPLICATOR_APPLY_CONNECTIONS", "apply.connections"),
        ("REGION_REPLICATOR_APPLY_STATEMENT_TIMEOUT_MS", "apply.statement_timeout_ms"),
        ("REGION_REPLICATOR_APPLY_LOCK_TIMEOUT_MS", "apply.lock_timeout_ms"),
        ("REGION_REPLICATOR_HTTP_LISTEN", "http.listen"),
        ("REGION_REPLICATOR_LOG_LEVEL", "log.level"),
        ("REGION_REPLICATOR_LOG_FORMAT", "log.format"),
        ("REGION_REPLICATOR_CAPTURE_ENABLED", "capture.enabled"),
    ]

    /// Variable-name prefixes owned by the configuration: an unknown variable under one of
    /// them is a typo and an error. Other `REGION_REPLICATOR_*` names are left alone.
    static let ownedEnvironmentPrefixes = [
        "REGION_REPLICATOR_KAFKA_", "REGION_REPLICATOR_APPLY_", "REGION_REPLICATOR_HTTP_",
        "REGION_REPLICATOR_LOG_", "REGION_REPLICATOR_REGION_", "REGION_REPLICATOR_CAPTURE_",
    ]

    /// Replaces the file's values with those from `environment`. Type errors name the variable.
    mutating func applyEnvironment(_ environment: [String: String], file: String) throws(ConfigError) {
        func fail(_ variable: String, _ message: String) -> ConfigError {
            ConfigError(file: file, key: variable, message: message)
        }
        func string(_ variable: String) -> Sourced<String>? {
            environment[variable].map { Sourced(value: $0, key: variable) }
        }
        func int(_ variable: String) throws(ConfigError) -> Sourced<Int>? {
            guard let text = environment[variable] else { return nil }
            let trimmed = text.trimmingCharacters(in: .whitespaces)
            guard !trimmed.contains("_"), let value = YAMLWalker.decimal(trimmed) else {
                throw fail(variable, "expected an integer, got \(quoted(text))")
            }
            return Sourced(value: value, key: variable)
        }
        func bool(_ variable: String) throws(ConfigError) -> Sourced<Bool>? {
            guard let text = environment[variable] else { return nil }
            switch text.trimmingCharacters(in: .whitespaces).lowercased() {
            case "true", "1", "yes", "on": return Sourced(value: true, key: variable)
            case "false", "0", "no", "off": return Sourced(value: false, key: variable)
            default: throw fail(variable, "expected true or false, got \(quoted(text))")
            }
        }

        if let v = string("REGION_REPLICATOR_KAFKA_BROKERS") { brokers = v }
        if let v = string("REGION_REPLICATOR_KAFKA_TOPIC") { topic = v }
        if let v = string("REGION_REPLICATOR_KAFKA_GROUP_PREFIX") { groupPrefix = v }
        if let v = string("REGION_REPLICATOR_KAFKA_GROUP_INSTANCE_ID") { groupInstanceID = v }
        if let v = string("REGION_REPLICATOR_APPLY_TABLE") { table = v }
        if let v = try int("REGION_REPLICATOR_APPLY_MAX_BATCH_EVENTS") { maxBatchEvents = v }
        if let v = try int("REGION_REPLICATOR_APPLY_MAX_BATCH_DELAY_MS") { maxBatchDelayMs = v }
        if let v = try int("REGION_REPLICATOR_APPLY_MAX_BATCH_BYTES") { maxBatchBytes = v }
        if let v = try bool("REGION_REPLICATOR_APPLY_APPLY_TO_ORIGIN") { applyToOrigin = v }
        if let v = try int("REGION_REPLICATOR_APPLY_CONNECTIONS") { connections = v }
        if let v = try int("REGION_REPLICATOR_APPLY_STATEMENT_TIMEOUT_MS") { statementTimeoutMs = v }
        if let v = try int("REGION_REPLICATOR_APPLY_LOCK_TIMEOUT_MS") { lockTimeoutMs = v }
        if let v = string("REGION_REPLICATOR_HTTP_LISTEN") { listen = v }
        if let v = string("REGION_REPLICATOR_LOG_LEVEL") { level = v }
        if let v = string("REGION_REPLICATOR_LOG_FORMAT") { format = v }
        if let v = try bool("REGION_REPLICATOR_CAPTURE_ENABLED") { capture.enabled = v }

        // Per-region DSNs: REGION_REPLICATOR_REGION_<NAME>_DSN.
        var regionsByVariable: [String: [Int]] = [:]
        for (index, region) in (regions?.value ?? []).enumerated() {
            regionsByVariable[ReplicatorConfig.dsnEnvironmentVariable(forRegion: region.name), default: []].append(index)
        }
        let fixed = Set(Self.environmentVariables.map(\.variable))
        for variable in environment.keys.sorted() where Self.ownedEnvironmentPrefixes.contains(where: variable.hasPrefix) {
            if fixed.contains(variable) { continue }
            // Never show the value: it may be a DSN.
            if variable.hasPrefix("REGION_REPLICATOR_REGION_") && variable.hasSuffix("_DSN") {
                guard let indices = regionsByVariable[variable] else {
                    let known = regionsByVariable.keys.sorted().joined(separator: ", ")
                    throw fail(variable, "no configured region has this variable (the configured regions' variables: \(known.isEmpty ? "none" : known))")
                }
                guard indices.count == 1, let index = indices.first else {
                    let names = indices.map { regions!.value[$0].name }.joined(separator: ", ")
                    throw fail(variable, "ambiguous: regions \(names) all map to this variable; rename one of them")
                }
                regions!.value[index].envDSN = Sourced(value: environment[variable]!, key: variable)
                continue
            }
            let known = Self.environmentVariables.map(\.variable) + ["REGION_REPLICATOR_REGION_<NAME>_DSN"]
            throw fail(variable, "unknown environment variable (known: \(known.joined(separator: ", ")))")
        }
    }
}
