import Foundation
import Testing

/// A region whose database stalls without refusing connections (every process of its server
/// SIGSTOPped, as a hung host would look): detected by timeouts, treated as down, the others
/// go on, the watchdog keeps pinging, and the region catches up after SIGCONT.
@Suite("Stalled region database", .serialized)
struct StallTests {
    @Test("SIGSTOP on a region's server: region_up 0 within 10 s, others apply, watchdog keeps pinging, catch-up after SIGCONT")
    func stalledRegion() throws {
        let port = try freeLoopbackPort()
        let h = try Harness(extraConfig: "http:\n  listen: \"127.0.0.1:\(port)\"\n")
        var w = Workload(origins: ["us-east-1", "eu-west-1", "ap-southeast-1"], seed: 21)
        w.generate(sessions: 20, messages: 1200)
        w.shuffle()
        let socket = try NotifySocket()
        let daemon = try Daemon(["run", "--config", h.configPath], logPath: h.dir + "/daemon-stall.log",
                                environment: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "2000000"])
        h.daemons.append(daemon)
        let half = w.events.count / 2
        try h.cluster.produce(Array(w.events[..<half]))
        try h.waitAllCaughtUp()

        let stalled = "eu-west-1"
        let pids = h.dbs.server(stalled).processes()
        guard !pids.isEmpty else { throw TestSetupError("no postmaster pid for \(stalled)") }
        for p in pids { kill(p, SIGSTOP) }
        var resumed = false
        defer { if !resumed { for p in pids { kill(p, SIGCONT) } } }
        let stalledAt = ContinuousClock.now
        try h.cluster.produce(Array(w.events[half...]))

        // Detected as down within 10 s (the lag monitor's statement timeout), while the
        // other regions catch up completely.
        try waitUntil("/lag to report \(stalled) down", timeout: .seconds(10)) {
            let lag = try HTTPProbe.get(port: port, "/lag").json()
            let regions = lag["regions"] as? [[String: Any]] ?? []
            return regions.contains { ($0["region"] as? String) == stalled && ($0["up"] as? Bool) == false }
        }
        for r in h.regions where r != stalled {
            try h.waitCaughtUp(r, timeout: .seconds(60))
            #expect(try h.rows(r) == w.expectedRows(in: r), "region \(r) did not catch up while \(stalled) was stalled")
        }
        // The daemon itself is healthy: watchdog pings keep coming (no gap above WATCHDOG_USEC).
        let window = ContinuousClock.now
        try waitUntil("4 s of watchdog pings during the stall", timeout: .seconds(20)) { ContinuousClock.now - window > .seconds(4) }
        let pings = socket.messages(with: "WATCHDOG=1").map(\.at).filter { $0 >= stalledAt }
        #expect(pings.count >= 3, "only \(pings.count) watchdog pings during the stall")
        let gaps = zip(pings, pings.dropFirst()).map { $1 - $0 }
        #expect(gaps.allSatisfy { $0 <= .seconds(2) }, "a watchdog gap above WATCHDOG_USEC: \(gaps.max() ?? .zero)")
        #expect(daemon.isRunning)

        for p in pids { kill(p, SIGCONT) }
        resumed = true
        try h.waitCaughtUp(stalled, timeout: .seconds(150))
        for r in h.regions {
            #expect(try h.rows(r) == w.expectedRows(in: r), "region \(r) differs from the model after the stall")
        }
        try waitUntil("/lag to report \(stalled) up again", timeout: .seconds(30)) {
            let lag = try HTTPProbe.get(port: port, "/lag").json()
            let regions = lag["regions"] as? [[String: Any]] ?? []
            return regions.contains { ($0["region"] as? String) == stalled && ($0["up"] as? Bool) == true }
        }
    }
}
