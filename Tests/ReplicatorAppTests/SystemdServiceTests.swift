import Foundation
import Logging
import ReplicationCore
import ServiceLifecycle
import Testing

@testable import ReplicatorApp

/// Shared fixtures: a status with two regions, made ready, behind, stalled or down at will.
private func makeStatus() -> ReplicationStatus {
    ReplicationStatus(topic: "chat.messages", regions: ["us-east-1", "eu-west-1"])
}

/// Both pipelines connected, Kafka answered, both regions caught up at offset 10.
private func makeReady(_ status: ReplicationStatus, now: Double = 1000) {
    for r in status.regionNames {
        status.pipelineDatabase(region: r, connected: true, problem: nil)
        status.storedOffsets(region: r, [0: 10], problem: nil)
        status.watermarks(region: r, [0: 10], at: now)
    }
}

@Suite("systemd notification state machine")
struct SystemdNotifyPlannerTests {
    let t0 = ContinuousClock.now

    func planner(watchdog: Duration? = nil, drainLimit: Duration? = .seconds(30)) -> SystemdNotifyPlanner {
        SystemdNotifyPlanner(watchdogTimeout: watchdog, statusInterval: .seconds(2), drainLimit: drainLimit)
    }

    @Test("STATUS= from the first poll; READY=1 exactly once, when the snapshot says ready")
    func readyOnce() {
        let status = makeStatus()
        var p = planner()
        #expect(p.step(status.snapshot(now: 1000), now: t0) == [
            .send("STATUS=starting; kafka DOWN; us-east-1 DOWN lag 0 events 0.0s; eu-west-1 DOWN lag 0 events 0.0s")])
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(250)) == [], "nothing changed")

        // One region connected is not enough.
        status.pipelineDatabase(region: "us-east-1", connected: true, problem: nil)
        status.storedOffsets(region: "us-east-1", [0: 10], problem: nil)
        status.watermarks(region: "us-east-1", [0: 10], at: 1000)
        let partial = p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(500))
        #expect(partial == [.send("STATUS=starting; us-east-1 up lag 0 events 0.0s; eu-west-1 DOWN lag 0 events 0.0s")])

        makeReady(status)
        let text = "ready; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 0 events 0.0s"
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(750)) == [.send("READY=1\nSTATUS=" + text), .ready(text)])
        #expect(p.readySent)
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .seconds(5)) == [], "READY=1 is sent once")
    }

    @Test("Lag figures alone are sent at most every 2 s; a region going down is sent at once")
    func statusRateLimit() {
        let status = makeStatus()
        makeReady(status, now: 990)  // caught up at 990; the record at offset 10 is stamped 995
        status.watermarks(region: "eu-west-1", [0: 25], at: 1000)
        status.oldestUnapplied(region: "eu-west-1", partition: 0, offset: 10, timestampMs: 995_000, at: 1000)
        var p = planner()
        let first = p.step(status.snapshot(now: 1000), now: t0)
        #expect(first.first == .send("READY=1\nSTATUS=ready; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 15 events 5.0s"))
        #expect(p.step(status.snapshot(now: 1000.5), now: t0 + .milliseconds(500)) == [], "5.5 s lag: not yet")
        #expect(p.step(status.snapshot(now: 1002), now: t0 + .seconds(2)) == [
            .send("STATUS=ready; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 15 events 7.0s")])
        status.pipelineDatabase(region: "eu-west-1", connected: false, problem: "connection refused")
        #expect(p.step(status.snapshot(now: 1002.1), now: t0 + .milliseconds(2100)) == [
            .send("STATUS=ready; us-east-1 up lag 0 events 0.0s; eu-west-1 DOWN lag 15 events 7.1s")])
    }

    @Test("Each capturing region's state is in STATUS= and its change is sent at once")
    func captureInStatus() {
        let status = makeStatus()
        makeReady(status)
        var streaming = CaptureRegionStatus(region: "us-east-1", slot: "region_replicator_us_east_1")
        streaming.streaming = true
        streaming.problem = nil
        streaming.slotActive = true
        var p = planner()
        let base = "ready; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 0 events 0.0s"
        let text = base + "; capture us-east-1 streaming"
        #expect(p.step(status.snapshot(now: 1000), capture: [streaming], now: t0) == [.send("READY=1\nSTATUS=" + text), .ready(text)])

        // Another instance streams the slot: this one stands by.
        var standby = streaming
        standby.streaming = false
        standby.problem = "replication slot is active for PID 42"
        #expect(p.step(status.snapshot(now: 1000), capture: [standby], now: t0 + .milliseconds(250)) == [
            .send("STATUS=" + base + "; capture us-east-1 standby")], "sent at once, not after the 2 s interval")

        // Nobody streams it.
        var down = standby
        down.slotActive = false
        down.problem = "connection refused"
        #expect(p.step(status.snapshot(now: 1000), capture: [down], now: t0 + .milliseconds(500)) == [
            .send("STATUS=" + base + "; capture us-east-1 DOWN")])

        // Invalidated by the server: named as such even while a session still runs.
        var lost = streaming
        lost.walStatus = "lost"
        #expect(p.step(status.snapshot(now: 1000), capture: [lost], now: t0 + .milliseconds(750)) == [
            .send("STATUS=" + base + "; capture us-east-1 SLOT LOST")])
        #expect(p.beginStopping(status.snapshot(now: 1000), capture: [lost], now: t0 + .seconds(1)) == [
            .send("STOPPING=1\nSTATUS=stopping; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 0 events 0.0s; capture us-east-1 SLOT LOST")])
    }

    @Test("WATCHDOG=1 every half timeout while no loop is stalled; withheld (with a warning) while one is")
    func watchdog() throws {
        let status = makeStatus()
        makeReady(status)
        var p = planner(watchdog: .seconds(2))
        #expect(p.step(status.snapshot(now: 1000), now: t0).contains(.send("WATCHDOG=1")), "the first poll pings")
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(900)) == [])
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .seconds(1)) == [.send("WATCHDOG=1")])

        status.heartbeat(region: "eu-west-1", loop: "pipeline", timeout: .nanoseconds(1))
        Thread.sleep(forTimeInterval: 0.01)
        let stalled = p.step(status.snapshot(now: 1000), now: t0 + .seconds(2))
        #expect(stalled.contains(.watchdogWithheld(["eu-west-1/pipeline"])))
        #expect(stalled.contains(.send("STATUS=ready; STALLED eu-west-1/pipeline; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 0 events 0.0s")))
        #expect(!stalled.contains(.send("WATCHDOG=1")))
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(2500)) == [], "one warning per ping interval")
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .seconds(3)) == [.watchdogWithheld(["eu-west-1/pipeline"])])

        status.heartbeat(region: "eu-west-1", loop: "pipeline", timeout: .seconds(60))
        let recovered = p.step(status.snapshot(now: 1000), now: t0 + .milliseconds(3100))
        #expect(recovered.contains(.send("WATCHDOG=1")), "the overdue ping goes out at the first poll after recovery")
    }

    @Test("STOPPING=1 once; never READY=1 after it; the drain limit fires once")
    func stopping() {
        let status = makeStatus()
        var p = planner(drainLimit: .seconds(30))
        _ = p.step(status.snapshot(now: 1000), now: t0)
        #expect(p.beginStopping(status.snapshot(now: 1000), now: t0 + .seconds(1)) == [
            .send("STOPPING=1\nSTATUS=stopping; kafka DOWN; us-east-1 DOWN lag 0 events 0.0s; eu-west-1 DOWN lag 0 events 0.0s")])
        #expect(p.beginStopping(status.snapshot(now: 1000), now: t0 + .seconds(2)) == [], "a second stop is the caller's cue")
        makeReady(status)
        let afterReady = p.step(status.snapshot(now: 1000), now: t0 + .seconds(3))
        #expect(!afterReady.contains { if case .send(let m) = $0 { m.hasPrefix("READY=1") } else { false } })
        #expect(p.step(status.snapshot(now: 1000), now: t0 + .seconds(31)) == [.drainLimitExceeded(.seconds(30))])
        #expect(!p.step(status.snapshot(now: 1000), now: t0 + .seconds(40)).contains(.drainLimitExceeded(.seconds(30))))
    }
}

/// Runs a blocking call on its own thread, keeping the cooperative pool free for the service.
private func onThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await BlockingThread.run(name: "notify-socket", body)
}

@Suite("SystemdService over a real datagram socket")
struct SystemdServiceTests {
    @Test("READY=1 when ready, WATCHDOG=1 paused by a stalled loop, STOPPING=1 on graceful shutdown")
    func lifecycle() async throws {
        let socket = try DatagramSocket()
        let status = makeStatus()
        let quiet = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": socket.notifyAddress, "WATCHDOG_USEC": "400000"], pid: getpid())
        let service = SystemdService(status: status, configPath: "/nonexistent", logger: quiet, notifier: notifier,
                                     handleSignals: false)
        let group = ServiceGroup(services: [service], logger: quiet)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }

            // Not ready: status and watchdog pings (the loops are alive), no READY=1.
            let early = await onThread {
                socket.receiveAll(until: { $0.filter { $0 == "WATCHDOG=1" }.count >= 2 }, timeout: .seconds(10))
            }
            #expect(early.first?.hasPrefix("STATUS=starting") == true, "\(early)")
            #expect(early.filter { $0 == "WATCHDOG=1" }.count >= 2, "\(early)")
            #expect(!early.contains { $0.hasPrefix("READY=1") })

            makeReady(status)
            let ready = await onThread {
                var skipped: [String] = []
                return socket.receive(until: { $0.hasPrefix("READY=1") }, timeout: .seconds(10), skipped: &skipped)
            }
            #expect(ready == "READY=1\nSTATUS=ready; us-east-1 up lag 0 events 0.0s; eu-west-1 up lag 0 events 0.0s")

            // A loop stuck beyond its own timeout: pings stop after the status says so.
            status.heartbeat(region: "us-east-1", loop: "pipeline", timeout: .milliseconds(1))
            // Wait (with a deadline) for the status that says so, then watch one more second.
            let stalled = await onThread {
                socket.receiveAll(until: { $0.contains { $0.contains("STALLED us-east-1/pipeline") } }, timeout: .seconds(10))
                    + socket.receiveAll(for: .seconds(1))
            }
            let mark = stalled.firstIndex { $0.contains("STALLED us-east-1/pipeline") }
            #expect(mark != nil, "\(stalled)")
            if let mark { #expect(!stalled[mark...].contains("WATCHDOG=1"), "\(stalled)") }

            status.heartbeat(region: "us-east-1", loop: "pipeline", timeout: .seconds(60))
            let resumed = await onThread {
                var skipped: [String] = []
                return socket.receive(until: { $0 == "WATCHDOG=1" }, timeout: .seconds(10), skipped: &skipped)
            }
            #expect(resumed != nil, "pings resume once the loop reports again")

            await group.triggerGracefulShutdown()
            let stopping = await onThread {
                var skipped: [String] = []
                return socket.receive(until: { $0.hasPrefix("STOPPING=1") }, timeout: .seconds(10), skipped: &skipped)
            }
            #expect(stopping?.hasPrefix("STOPPING=1\nSTATUS=stopping;") == true)
            try await tasks.waitForAll()
        }
    }
}
