// Arithmetic on figures that come from outside (broker watermarks, offsets stored in a region's
// database, counts in its replies): it must not trap. Where a result leaves Int64 it saturates
// at the bound — a lag of Int64.max events is as absurd as the inputs that made it, and says
// so, where wrapping (`&-`, `&+`) would turn it into a plausible figure.
extension Int64 {
    /// `self − other`, saturated at `Int64.min` / `Int64.max`.
    public func saturatingSubtracting(_ other: Int64) -> Int64 {
        let (r, overflow) = subtractingReportingOverflow(other)
        return overflow ? (other < 0 ? .max : .min) : r
    }

    /// `self + other`, saturated at `Int64.min` / `Int64.max`.
    public func saturatingAdding(_ other: Int64) -> Int64 {
        let (r, overflow) = addingReportingOverflow(other)
        return overflow ? (other < 0 ? .min : .max) : r
    }

    /// `self × other`, saturated at `Int64.min` / `Int64.max`.
    public func saturatingMultiplied(by other: Int64) -> Int64 {
        let (r, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? ((self < 0) == (other < 0) ? .max : .min) : r
    }

    /// The whole milliseconds of `unixSeconds` (a wall-clock reading), saturated; NaN gives 0.
    public static func milliseconds(fromUnixSeconds unixSeconds: Double) -> Int64 {
        let ms = (unixSeconds * 1000).rounded(.down)
        guard !ms.isNaN else { return 0 }
        if ms >= 9_223_372_036_854_775_808.0 { return .max }
        if ms < -9_223_372_036_854_775_808.0 { return .min }
        return Int64(ms)
    }
}
