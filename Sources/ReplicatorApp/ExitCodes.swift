public import ArgumentParser

/// The exit codes listed in README.md (sysexits.h values).
extension ExitCode {
    /// EX_USAGE: bad command line.
    public static let usage = ExitCode(64)
    /// EX_UNAVAILABLE: a required service (Kafka, a region's database) is unreachable.
    public static let unavailable = ExitCode(69)
    /// EX_CONFIG: bad configuration file, unknown region.
    public static let configuration = ExitCode(78)
}
