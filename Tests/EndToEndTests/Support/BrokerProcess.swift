import Foundation

/// A standalone Kafka-protocol broker process (`rr-devtool broker`: librdkafka's mock cluster
/// with three brokers on 127.0.0.1), so that its outages are the outages of another process.
/// SIGUSR1 takes every broker down (connections refused and dropped), SIGUSR2 brings them back.
final class BrokerProcess: @unchecked Sendable {
    let child: ChildProcess
    let bootstrap: String
    let logPath: String

    init(topic: String, partitions: Int, dir: String, environment: [String: String] = [:]) throws {
        let tool = TestEnvironment.binDir + "/rr-devtool"
        guard FileManager.default.isExecutableFile(atPath: tool) else {
            throw TestSetupError("no rr-devtool binary at \(tool): run `swift build` or `bash scripts/test`")
        }
        let bootstrapFile = dir + "/bootstrap"
        let logPath = dir + "/broker.log"
        let child = try ChildProcess(tool, ["broker", "--brokers", "3", "--topic", topic, "--partitions", String(partitions),
                                            "--bootstrap-file", bootstrapFile], outputPath: logPath,
                                 environment: ProcessInfo.processInfo.environment.merging(environment) { $1 })
        var found = ""
        do {
            try waitUntil("the broker process to write \(bootstrapFile)", timeout: .seconds(30)) {
                found = (try? String(contentsOfFile: bootstrapFile, encoding: .utf8)) ?? ""
                return !found.isEmpty || !child.isRunning
            }
            guard child.isRunning else {
                throw TestSetupError("the broker process exited: \((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
            }
        } catch {
            child.signal(SIGKILL)
            _ = try? child.wait(timeout: .seconds(10))
            throw error
        }
        self.child = child
        self.logPath = logPath
        bootstrap = found
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Takes every broker down (`up: false`) or back up, and waits until the process says so.
    func setBrokers(up: Bool) throws {
        let line = up ? "brokers up" : "brokers down"
        let before = log.components(separatedBy: line).count
        child.signal(up ? SIGUSR2 : SIGUSR1)
        do {
            try waitUntil("the broker process to report \(line)", timeout: .seconds(30), interval: .milliseconds(20)) {
                log.components(separatedBy: line).count > before
            }
        } catch {
            throw TestSetupError("\(error); broker running: \(child.isRunning); its log ends: \(log.suffix(2000))")
        }
    }

    deinit {
        child.signal(SIGTERM)
        if (try? child.wait(timeout: .seconds(10))) == nil {
            child.signal(SIGKILL)
            _ = try? child.wait(timeout: .seconds(10))
        }
    }
}
