// swift-tools-version:6.0
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    // Our own targets only (never a dependency's): a warning fails the build.
    .unsafeFlags(["-warnings-as-errors"]),
]

let package = Package(
    name: "region-replicator",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "region-replicator", targets: ["region-replicator"]),
        .executable(name: "rr-devtool", targets: ["rr-devtool"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.5.0"),
    ],
    targets: [
        // MARK: - C libraries (system packages from Debian)
        .systemLibrary(
            name: "CRdKafka",
            pkgConfig: "rdkafka",
            providers: [.apt(["librdkafka-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),

        // MARK: - Wrappers: the only importers of the C targets
        .target(
            name: "KafkaClient",
            dependencies: ["CRdKafka"],
            swiftSettings: strict
        ),
        .target(
            name: "PostgresClient",
            dependencies: ["CLibPQ"],
            swiftSettings: strict
        ),

        // MARK: - Domain
        .target(
            name: "ReplicationCore",
            dependencies: [
                "KafkaClient",
                "PostgresClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Application: config, commands, wiring
        .target(
            name: "ReplicatorApp",
            dependencies: [
                "ReplicationCore",
                "KafkaClient",
                "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict,
            plugins: ["BuildInfo"]
        ),
        // Records the resolved version of every package in the build for `region-replicator version`.
        .plugin(name: "BuildInfo", capability: .buildTool()),
        .executableTarget(
            name: "region-replicator",
            dependencies: ["ReplicatorApp"],
            swiftSettings: strict
        ),
        // Development tool: a standalone mock Kafka cluster process and an event producer,
        // used by scripts/demo and the end-to-end tests. Not installed.
        .executableTarget(
            name: "rr-devtool",
            dependencies: [
                "KafkaClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),

        // libFuzzer target over the event decoder: `scripts/fuzz` builds it with
        // `-sanitize=fuzzer -DFUZZING`; an ordinary build makes it a replay tool (FILE|DIR...), so
        // it always compiles and links with the rest of the package. Not installed.
        .executableTarget(
            name: "DecoderFuzzer",
            dependencies: ["ReplicationCore"],
            swiftSettings: strict
        ),

        // libFuzzer target over record metadata (offsets, timestamps, keys, watermarks) through
        // the bookkeeping, the apply statements and the lag figures; built like DecoderFuzzer.
        .executableTarget(
            name: "MetadataFuzzer",
            dependencies: ["ReplicationCore", "KafkaClient"],
            swiftSettings: strict
        ),

        // MARK: - Tests
        .testTarget(name: "KafkaClientTests", dependencies: ["KafkaClient", "ReplicationCore"], swiftSettings: strict),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient"], swiftSettings: strict),
        .testTarget(name: "ReplicationCoreTests", dependencies: ["ReplicationCore", "KafkaClient"], swiftSettings: strict),
        .testTarget(name: "ReplicatorAppTests", dependencies: ["ReplicatorApp"], swiftSettings: strict),
        .testTarget(
            name: "EndToEndTests",
            dependencies: ["KafkaClient", "PostgresClient", "ReplicationCore"],
            // Each released schema's DDL, read by path (SchemaVersionTests).
            exclude: ["Fixtures"],
            swiftSettings: strict
        ),
    ]
)
