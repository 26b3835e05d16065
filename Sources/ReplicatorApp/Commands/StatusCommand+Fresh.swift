import Foundation
import ReplicationCore

extension Status {
    /// Appends each region's `/fresh` answer (docs/metrics.md) to the table: whether the region
    /// holds everything on the topic now, and if not, why. Silent when the daemon has no
    /// `/fresh` (an older version) or does not answer it.
    func printFreshness(host: String, port: Int, basePath: String) async {
        let request = PlainHTTP.Request(method: "GET", host: host, port: port, path: basePath + "/fresh?wait_ms=0",
                                        timeout: .seconds(timeout))
        guard let response = try? await BlockingThread.run(name: "status-fresh", { try PlainHTTP.perform(request) }),
              response.status == 200 || response.status == 503,
              let doc = try? JSONDecoder().decode(FreshDocument.self, from: Data(response.body)) else { return }
        print("\n" + Self.renderFreshness(doc), terminator: "")
    }

    /// One line per region: `FRESH <region>: yes` or `no (<reason>: <missing or problem>)`.
    static func renderFreshness(_ doc: FreshDocument) -> String {
        var out = ""
        for r in doc.regions.values.sorted(by: { $0.region < $1.region }) {
            if r.fresh {
                out += "fresh \(r.region): yes\n"
                continue
            }
            let missing = r.missing.values.reduce(Int64(0)) { $0.saturatingAdding($1) }
            let detail = r.problem ?? (missing > 0 ? "\(missing) events not applied yet" : "")
            out += "fresh \(r.region): NO (\(r.reason ?? "unknown")\(detail.isEmpty ? "" : ": \(detail)"))\n"
        }
        return out
    }
}
