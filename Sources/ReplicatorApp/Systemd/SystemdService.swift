import Foundation
public import Logging
public import ReplicationCore
public import ServiceLifecycle
import Synchronization
import UnixSignals
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The daemon's side of systemd's `Type=notify` protocol, plus the signals systemd sends.
///
/// - `READY=1` once ``ReplicationSnapshot/ready`` (Kafka answered, every region's pipeline is
///   connected with its schema verified), sent once, with the first `STATUS=` line.
/// - `STATUS=` lines summarising each region's state and lag
///   (`ready; us-east-1 up lag 0 events 0.0s; eu-west-1 DOWN lag 123 events 4.2s`): at once
///   when a region goes up or down, readiness or a stall changes, else at most every 2 s.
/// - `WATCHDOG=1` every half of `WATCHDOG_USEC` while ``ReplicationSnapshot/stalledLoops`` is
///   empty. A loop stuck beyond its own timeout withholds the pings (with a warning naming
///   it), so systemd's watchdog restarts the daemon; the pings themselves come from this
///   service's task, so a stuck concurrency runtime stops them too.
/// - The first SIGTERM or SIGINT (the ``ServiceGroup`` drains on it) sends `STOPPING=1`; a
///   second one during the drain exits the process at once with status 0. Nothing is lost:
///   every batch commits in one transaction together with its offsets, so an interrupted
///   batch rolls back and is applied again after the restart. A drain longer than
///   `drainLimit` (30 s) ends the same way.
/// - SIGHUP re-reads the configuration file and applies its `log.level` (other settings take
///   effect on restart); an invalid file is logged and the current level kept.
///
/// Run it as the **first** service of the group: the group stops services in reverse order,
/// so this one keeps pinging the watchdog and listening for a second signal while the
/// pipelines drain, and returns (sending `STOPPING=1` if no signal did) after they stopped.
/// Without `NOTIFY_SOCKET` nothing is sent, but SIGHUP and the second-signal exit still work.
public struct SystemdService: Service {
    /// How long a graceful drain may take before the process exits anyway.
    public static let defaultDrainLimit: Duration = .seconds(30)

    let status: ReplicationStatus
    /// Each capturing region's capture side, shown in `STATUS=` (nil: no region captures).
    let capture: CaptureStatus?
    let configPath: String
    let logger: Logger
    let notifier: SystemdNotifier
    let pollInterval: Duration
    let statusInterval: Duration
    let drainLimit: Duration?
    /// Whether to trap SIGHUP, SIGTERM and SIGINT (tests of the notifications leave them alone).
    let handleSignals: Bool

    /// - Parameters:
    ///   - status: the shared replication status the notifications are derived from.
    ///   - capture: the capturing regions' status, nil when no region captures.
    ///   - configPath: the configuration file SIGHUP re-reads.
    ///   - logger: the daemon's logger.
    ///   - drainLimit: the longest graceful drain after SIGTERM/SIGINT; `nil` for no limit.
    public init(status: ReplicationStatus, capture: CaptureStatus? = nil, configPath: String, logger: Logger,
                drainLimit: Duration? = SystemdService.defaultDrainLimit) {
        self.init(status: status, capture: capture, configPath: configPath, logger: logger, notifier: SystemdNotifier(),
                  drainLimit: drainLimit)
    }

    init(status: ReplicationStatus, capture: CaptureStatus? = nil, configPath: String, logger: Logger, notifier: SystemdNotifier,
         pollInterval: Duration = .milliseconds(250), statusInterval: Duration = .seconds(2),
         drainLimit: Duration? = SystemdService.defaultDrainLimit, handleSignals: Bool = true) {
        self.status = status
        self.capture = capture
        self.configPath = configPath
        self.logger = logger
        self.notifier = notifier
        // Poll often enough to ping within half the watchdog timeout even when a poll is late.
        self.pollInterval = notifier.watchdogTimeout.map { min(pollInterval, $0 / 8) } ?? pollInterval
        self.statusInterval = statusInterval
        self.drainLimit = drainLimit
        self.handleSignals = handleSignals
    }

    public func run() async {
        if let problem = notifier.problem { logger.warning("\(problem)") }
        if let timeout = notifier.watchdogTimeout {
            logger.info("systemd watchdog enabled", metadata: ["timeout": "\(timeout)", "ping_every": "\(timeout / 2)"])
        }
        let shared = Shared(SystemdNotifyPlanner(watchdogTimeout: notifier.watchdogTimeout, statusInterval: statusInterval,
                                                 drainLimit: drainLimit))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.notifyLoop(shared) }
            if handleSignals { group.addTask { await self.signalLoop(shared) } }
            // Returns when the group reaches this service in its (reverse-order) shutdown, i.e.
            // after every pipeline stopped; throws when the task is cancelled.
            try? await gracefulShutdown()
            group.cancelAll()
        }
        let snapshot = status.snapshot()
        let captured = captureSnapshot()
        perform(shared.planner.withLock { $0.beginStopping(snapshot, capture: captured, now: .now) }, shared)
    }

    /// The capturing regions' status, in region order.
    private func captureSnapshot() -> [CaptureRegionStatus] {
        (capture?.snapshot().values).map { $0.sorted { $0.region < $1.region } } ?? []
    }

    // MARK: - Loops

    private func notifyLoop(_ shared: Shared) async {
        while !Task.isCancelled {
            let snapshot = status.snapshot()
            let captured = captureSnapshot()
            perform(shared.planner.withLock { $0.step(snapshot, capture: captured, now: .now) }, shared)
            do { try await Task.sleep(for: pollInterval) } catch { return }
        }
    }

    private func signalLoop(_ shared: Shared) async {
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint)
        for await signal in signals {
            if signal == .sighup {
                await reloadLogLevel()
                continue
            }
            let snapshot = status.snapshot()
            let captured = captureSnapshot()
            let actions = shared.planner.withLock { $0.beginStopping(snapshot, capture: captured, now: .now) }
            if actions.isEmpty {
                logger.notice("second \(signal) during the drain: exiting now; uncommitted batches roll back and are applied again after the restart")
                try? notifier.stopping(status: "stopping: exiting at once on a second \(signal)")
                Self.exitNow()
            }
            logger.notice("\(signal): draining in-flight batches (a second SIGTERM or SIGINT exits at once)")
            perform(actions, shared)
        }
    }

    private func perform(_ actions: [SystemdNotifyPlanner.Action], _ shared: Shared) {
        for action in actions {
            switch action {
            case .send(let message):
                do {
                    try notifier.send(message)
                } catch {
                    // At most one warning a minute: a full or missing socket is not worth a flood.
                    let now = ContinuousClock.now
                    let due = shared.lastSendWarning.withLock { last in
                        if let l = last, now - l < .seconds(60) { return false }
                        last = now
                        return true
                    }
                    if due { logger.warning("systemd notification failed", metadata: ["error": "\(error)"]) }
                }
            case .ready(let text):
                logger.notice("ready: Kafka and every region connected", metadata: ["status": "\(text)"])
            case .watchdogWithheld(let loops):
                logger.warning("withholding the systemd watchdog ping: loops stalled beyond their timeout",
                               metadata: ["stalled": "\(loops.joined(separator: ","))"])
            case .drainLimitExceeded(let limit):
                logger.error("the graceful drain did not finish within \(limit); exiting now (uncommitted batches roll back and are applied again after the restart)")
                try? notifier.stopping(status: "stopping: drain limit exceeded, exiting")
                Self.exitNow()
            }
        }
    }

    /// Re-reads the configuration file and applies its `log.level` (SIGHUP).
    private func reloadLogLevel() async {
        let path = configPath
        let loaded: Result<ReplicatorConfig, ConfigError> = await BlockingThread.run(name: "config-reload") {
            Result { () throws(ConfigError) in try ReplicatorConfig.load(path: path) }
        }
        let old = LoggingSetup.currentLevel
        switch loaded {
        case .success(let config):
            let new = config.log.level
            if new == old {
                logger.notice("SIGHUP: configuration re-read; log level unchanged", metadata: ["level": "\(new)"])
            } else if new < old {
                // More verbose: switch first, so the notice shows at either level.
                LoggingSetup.setLevel(new)
                logger.notice("log level changed to \(new)", metadata: ["previous": "\(old)"])
            } else {
                logger.notice("log level changed to \(new)", metadata: ["previous": "\(old)"])
                LoggingSetup.setLevel(new)
            }
        case .failure(let error):
            logger.error("SIGHUP: the configuration file is invalid; keeping log level \(old)", metadata: ["error": "\(error)"])
        }
    }

    /// Exits at once with status 0. `_exit`, not `exit`: the pipeline threads are still
    /// running, and atexit handlers must not run under them.
    private static func exitNow() -> Never {
        fflush(nil)
        _exit(0)
    }

    /// State shared by the loops of one ``run()``.
    final class Shared: Sendable {
        let planner: Mutex<SystemdNotifyPlanner>
        let lastSendWarning = Mutex<ContinuousClock.Instant?>(nil)

        init(_ planner: SystemdNotifyPlanner) { self.planner = Mutex(planner) }
    }
}

// MARK: - The notification state machine

/// What to tell systemd, and when: a pure state machine fed with status snapshots and the
/// current time; it returns the datagrams to send and the events to log.
struct SystemdNotifyPlanner: Sendable {
    enum Action: Equatable, Sendable {
        /// One notification datagram (`READY=1\nSTATUS=…`, `STATUS=…`, `WATCHDOG=1`, `STOPPING=1…`).
        case send(String)
        /// Just became ready, with this status.
        case ready(String)
        /// A watchdog ping is due but these loops are stalled.
        case watchdogWithheld([String])
        /// Stopping has lasted longer than the drain limit.
        case drainLimitExceeded(Duration)
    }

    /// Half the watchdog timeout (the ping interval), nil without a watchdog.
    let watchdogInterval: Duration?
    let statusInterval: Duration
    let drainLimit: Duration?

    private(set) var readySent = false
    private(set) var stopping = false
    private var stopDeadline: ContinuousClock.Instant?
    private var nextWatchdog: ContinuousClock.Instant?
    private var nextStallWarning: ContinuousClock.Instant?
    private var lastStatus: (text: String, key: String, at: ContinuousClock.Instant)?

    init(watchdogTimeout: Duration?, statusInterval: Duration, drainLimit: Duration?) {
        watchdogInterval = watchdogTimeout.map { $0 / 2 }
        self.statusInterval = statusInterval
        self.drainLimit = drainLimit
    }

    /// One poll: readiness, status and watchdog.
    mutating func step(_ snapshot: ReplicationSnapshot, capture: [CaptureRegionStatus] = [],
                       now: ContinuousClock.Instant) -> [Action] {
        var actions: [Action] = []
        if let deadline = stopDeadline, now >= deadline, let drainLimit {
            stopDeadline = nil
            return [.drainLimitExceeded(drainLimit)]
        }
        let (text, key) = Self.statusText(snapshot, capture: capture, stopping: stopping)
        if !readySent && !stopping && snapshot.ready {
            readySent = true
            lastStatus = (text, key, now)
            actions += [.send("READY=1\nSTATUS=" + text), .ready(text)]
        } else if let last = lastStatus {
            if last.key != key || (last.text != text && now - last.at >= statusInterval) {
                lastStatus = (text, key, now)
                actions.append(.send("STATUS=" + text))
            }
        } else {
            lastStatus = (text, key, now)
            actions.append(.send("STATUS=" + text))
        }
        if let interval = watchdogInterval, nextWatchdog.map({ now >= $0 }) ?? true {
            if snapshot.stalledLoops.isEmpty {
                actions.append(.send("WATCHDOG=1"))
                nextWatchdog = now + interval
                nextStallWarning = nil
            } else if nextStallWarning.map({ now >= $0 }) ?? true {
                // The ping stays due: it goes out at the first poll after the loops recover.
                actions.append(.watchdogWithheld(snapshot.stalledLoops))
                nextStallWarning = now + interval
            }
        }
        return actions
    }

    /// The drain began: `STOPPING=1` with a status line; empty when already stopping.
    mutating func beginStopping(_ snapshot: ReplicationSnapshot, capture: [CaptureRegionStatus] = [],
                                now: ContinuousClock.Instant) -> [Action] {
        guard !stopping else { return [] }
        stopping = true
        stopDeadline = drainLimit.map { now + $0 }
        let (text, key) = Self.statusText(snapshot, capture: capture, stopping: true)
        lastStatus = (text, key, now)
        return [.send("STOPPING=1\nSTATUS=" + text)]
    }

    /// The `STATUS=` text, and the part of it whose change is sent at once (phase, Kafka,
    /// stalls, which regions are up, each capturing region's state); lag figures alone are sent
    /// at most every `statusInterval`.
    static func statusText(_ s: ReplicationSnapshot, capture: [CaptureRegionStatus] = [],
                           stopping: Bool) -> (text: String, key: String) {
        var parts = [stopping ? "stopping" : s.ready ? "ready" : "starting"]
        if !s.kafkaOK { parts.append("kafka DOWN") }
        if !s.stalledLoops.isEmpty { parts.append("STALLED " + s.stalledLoops.joined(separator: ",")) }
        var key = parts.joined(separator: ";")
        for r in s.regions {
            parts.append("\(r.region) \(r.up ? "up" : "DOWN") lag \(r.lagEvents) events \(String(format: "%.1f", r.lagSeconds))s")
            key += ";\(r.region)=\(r.up)"
        }
        for c in capture {
            let state = captureState(c)
            parts.append("capture \(c.region) \(state)")
            key += ";capture \(c.region)=\(state)"
        }
        return (parts.joined(separator: "; "), key)
    }

    /// `streaming` (this instance publishes the region's writes), `standby` (another process
    /// streams the slot), `SLOT LOST` (invalidated: the runbook), or `DOWN`.
    static func captureState(_ c: CaptureRegionStatus) -> String {
        if c.walStatus == "lost" { return "SLOT LOST" }
        if c.streaming { return "streaming" }
        if c.slotActive == true { return "standby" }
        return "DOWN"
    }
}
