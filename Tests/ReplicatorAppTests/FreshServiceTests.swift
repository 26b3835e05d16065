import Foundation
import ReplicationCore
import Testing

@testable import ReplicatorApp

/// `/fresh`'s query parsing (hostile text is a 400, never a trap) and `status`'s lines.
@Suite("/fresh query and status lines")
struct FreshServiceTests {
    func parse(_ q: String, max: Int = 5000) -> Result<FreshService.Query, FreshService.FreshQueryError> {
        FreshService.parse(q, maxWaitMs: max)
    }

    @Test("region, wait_ms (cut to the ceiling) and token; everything else refused")
    func query() throws {
        let token = FreshToken(scope: 7, partition: 2, offset: 9)
        let q = try parse("region=eu-west-1&wait_ms=999999&token=\(token.encoded)").get()
        #expect(q.region == "eu-west-1" && q.waitMs == 5000 && q.token == token)
        #expect(try parse("").get().region == nil)
        #expect(try parse("region=a%2Db").get().region == "a-b")
        for bad in ["wait_ms=-1", "wait_ms=1e3", "wait_ms=99999999999999999999", "token=abc", "region=a&region=b",
                    "bogus=1", "region=%ZZ"] {
            if case .success = parse(bad) { Issue.record("accepted \(bad)") }
        }
    }

    @Test("status prints one freshness line per region, with the reason when not fresh")
    func statusLines() throws {
        let doc = FreshDocument([
            FreshAnswer(region: "b", fresh: false, waitedMs: 0, reason: .behind, problem: nil, missing: [0: 3, 1: 4], token: false),
            FreshAnswer(region: "a", fresh: true, waitedMs: 0, reason: nil, problem: nil, missing: [:], token: false),
            FreshAnswer(region: "c", fresh: false, waitedMs: 0, reason: .regionDown, problem: "database unreachable: refused",
                        missing: [:], token: false),
        ])
        #expect(Status.renderFreshness(doc) == """
            fresh a: yes
            fresh b: NO (behind: 7 events not applied yet)
            fresh c: NO (region_down: database unreachable: refused)

            """)
        let data = try JSONEncoder().encode(doc)
        #expect(try JSONDecoder().decode(FreshDocument.self, from: data) == doc)
    }

    @Test("the hand-written body is byte for byte what JSONEncoder writes: every control character, quotes, slashes, non-ASCII")
    func handEncodedBody() throws {
        let hostile = String(decoding: (0..<0x80).map { UInt8($0) }, as: UTF8.self) + " \u{7F} é ✓ 𝄞 \"/\\ </script>"
        let doc = FreshDocument([
            FreshAnswer(region: "b/\"x", fresh: false, waitedMs: 1_234, reason: .behind, problem: hostile,
                        missing: [0: 3, 2: 4, 10: 1, 1: Int64.max], token: true),
            FreshAnswer(region: "a", fresh: true, waitedMs: 0, reason: nil, problem: nil, missing: [:], token: false),
            FreshAnswer(region: "c", fresh: false, waitedMs: -1, reason: .regionDown, problem: "database unreachable: refused",
                        missing: [:], token: false),
        ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        func expected(_ v: some Encodable) throws -> String { String(decoding: try encoder.encode(v), as: UTF8.self) + "\n" }
        #expect(String(decoding: doc.json(), as: UTF8.self) == (try expected(doc)))
        for region in doc.regions.values {
            #expect(String(decoding: region.json(), as: UTF8.self) == (try expected(region)))
        }
        #expect(try JSONDecoder().decode(FreshDocument.self, from: Data(doc.json())) == doc)
    }
}
