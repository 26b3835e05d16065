public import ArgumentParser

/// The exit codes listed in README.md (sysexits.h values).
extension ExitCode {
    /// `verify`: the regions diverge (0 is consistent, 1 stays any other error).
    public static let divergent = ExitCode(2)
    /// EX_USAGE: bad command line.
    public static let usage = ExitCode(64)
    /// EX_UNAVAILABLE: a required service (Kafka, a region's database) is unreachable.
    public static let unavailable = ExitCode(69)
    /// EX_CONFIG: bad configuration file, unknown region.
    public static let configuration = ExitCode(78)
}
