import Foundation

/// Capped exponential backoff with full jitter.
public struct Backoff: Sendable {
    public var initial: Duration
    public var maximum: Duration
    public private(set) var attempt = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt (grows ×2 per attempt up to `maximum`, jittered to 50–100 %).
    public mutating func next() -> Duration {
        let exp = min(attempt, 20)
        attempt += 1
        let base = min(initial * (1 << exp), maximum)
        return base * Double.random(in: 0.5...1.0)
    }

    /// Waits out `delay` on the calling (dedicated, blocking) thread in slices of at most
    /// `slice`, calling `tick` before each slice (heartbeats), and gives up early once `stop()`
    /// says so. Never call it on Swift's cooperative pool.
    /// - Returns: false when `stop()` ended the wait.
    @discardableResult
    public static func wait(_ delay: Duration, slice: Duration = .milliseconds(50),
                            stop: () -> Bool, tick: () -> Void = {}) -> Bool {
        let until = ContinuousClock.now.advanced(by: delay)
        while ContinuousClock.now < until {
            if stop() { return false }
            tick()
            let left = until - ContinuousClock.now
            Thread.sleep(forTimeInterval: max(0.001, min(slice, left).seconds))
        }
        return !stop()
    }
}
