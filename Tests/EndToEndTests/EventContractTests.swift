import Foundation
import Testing

/// The event contract (docs/event.schema.json) checked with a real validator (Python's
/// `jsonschema`, in the venv scripts/test makes) against every event the test producers emit.
@Suite("Event contract: what the producers emit is valid")
struct EventContractTests {
    static var python: String? { ProcessInfo.processInfo.environment["RR_TEST_PYTHON"] }
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    func validate(_ file: String) throws -> String {
        guard let python = Self.python else {
            throw TestSetupError("RR_TEST_PYTHON is not set: run the tests with `bash scripts/test` (it makes the venv with jsonschema)")
        }
        return try TestEnvironment.run(python, [Self.repository + "/scripts/validate-events.py", "--events", file])
    }

    @Test("Every event of the end-to-end workload and of rr-devtool's producer validates against the schema")
    func producersEmitValidEvents() throws {
        let dir = NSTemporaryDirectory() + "rr-contract-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: 7)
        w.generate(sessions: 20, messages: 2000)
        var lines = Data()
        for e in w.events {
            lines.append(try JSONSerialization.data(withJSONObject: e.json))
            lines.append(0x0A)
        }
        let workload = dir + "/workload.jsonl"
        try lines.write(to: URL(fileURLWithPath: workload))
        let out = try validate(workload)
        #expect(out.contains("\(w.events.count) produced events: ok"), "\(out)")

        let devtool = dir + "/devtool.jsonl"
        try TestEnvironment.run(TestEnvironment.binDir + "/rr-devtool", ["produce", "--json-lines", devtool, "--count", "3000", "--rate", "0"])
        let out2 = try validate(devtool)
        #expect(out2.contains("3000 produced events: ok"), "\(out2)")
    }
}
