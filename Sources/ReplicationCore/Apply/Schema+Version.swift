import Metrics
public import PostgresClient

extension Schema {
    /// The schema versions this release runs against: its own and those it still reads and
    /// writes correctly. A package upgrade restarts the daemon without running `migrate`, so
    /// each release keeps at least the previous release's version here (docs/operations.md).
    public static let supportedVersions: ClosedRange<Int> = 2...currentVersion

    /// `region_replicator_schema_compatible{region}`: 1 when the region's recorded schema
    /// version is in ``supportedVersions``, 0 when it is outside (docs/metrics.md).
    public static let compatibleMetric = MetricName.schemaCompatible

    /// Why this release refuses the region, when the schema version `migrate` recorded for
    /// `table` in `replicator_schema` is outside ``supportedVersions``; nil when it is inside or
    /// nothing is recorded (the tables are missing, reported by ``check(_:table:)``, or the
    /// table was adopted and never altered by `migrate`). With `region`, also sets the gauge.
    public static func versionProblem(_ db: PostgresConnection, table: TableName, region: String? = nil) throws(PostgresError) -> String? {
        let r = try db.query("""
            SELECT CASE WHEN to_regclass('replicator_schema') IS NULL THEN NULL
                        ELSE (SELECT schema_version::text FROM replicator_schema WHERE table_name = $1) END
            """, [table.description])
        var problem: String? = nil
        if let row = r.rows.first, let cell = row.first, let found = cell {
            problem = versionProblem(found: found, region: region)
        }
        if let region {
            Gauge(label: compatibleMetric, dimensions: [("region", region)]).record(problem == nil ? 1 : 0)
        }
        return problem
    }

    /// The problem for a recorded version (the database's text, hostile: parsed, never trusted).
    static func versionProblem(found text: String, region: String?) -> String? {
        let supported = "\(supportedVersions.lowerBound)…\(supportedVersions.upperBound)"
        let migrate = "region-replicator migrate" + (region.map { " --region \($0)" } ?? "")
        guard let v = Int(text) else {
            return "schema version \(text.prefix(40)) recorded in replicator_schema is not a number; this release supports \(supported): run `\(migrate)`"
        }
        if v > supportedVersions.upperBound {
            return "schema version \(v) is newer than this release supports (\(supported)): a newer region-replicator migrated this "
                + "database; run that release again (a binary rollback cannot run against it)"
        }
        if v < supportedVersions.lowerBound {
            return "schema version \(v) is older than this release supports (\(supported)): run `\(migrate)`"
        }
        return nil
    }
}

extension MetricName {
    /// 1/0 per region: its recorded schema version is in ``Schema/supportedVersions``.
    public static let schemaCompatible = "region_replicator_schema_compatible"
}
