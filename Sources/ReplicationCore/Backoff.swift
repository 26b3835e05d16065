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

}
