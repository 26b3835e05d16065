import Foundation
@testable import KafkaClient
import ReplicationCore
import Testing

/// Capture's producer: idempotent, each record enqueued with a token that its delivery report
/// names, acknowledged only once the broker has it.
@Suite("IdempotentProducer", .timeLimit(.minutes(2)))
struct IdempotentProducerTests {
    @Test("every token is acknowledged once, none while the brokers are down, all after they are back")
    func tokensAreAcknowledgedByTheBroker() async throws {
        let (first, whileDown, afterUp, stored) = try await BlockingThread.run(name: "kafka-test") {
            () throws -> ([KafkaDelivery], [KafkaDelivery], [KafkaDelivery], Int64) in
            let cluster = try KafkaMockCluster(brokers: 1)
            try cluster.createTopic("captured", partitions: 3)
            let producer = try KafkaProducer(idempotent: KafkaConfiguration([
                ("bootstrap.servers", cluster.bootstrapServers), ("log_level", "2")]))
            func collect(_ n: Int, within: Duration) -> [KafkaDelivery] {
                var got: [KafkaDelivery] = []
                let deadline = ContinuousClock.now.advanced(by: within)
                while got.count < n && ContinuousClock.now < deadline { got += producer.pollDeliveries(timeoutMs: 50) }
                return got
            }
            for t in 1...100 {
                #expect(try producer.enqueue(topic: "captured", key: Array("session-\(t % 7)".utf8), value: Array("v\(t)".utf8),
                                             timestampMs: nil, token: UInt64(t)))
            }
            let first = collect(100, within: .seconds(30))
            cluster.setBroker(1, up: false)
            for t in 101...110 {
                _ = try producer.enqueue(topic: "captured", key: Array("s\(t)".utf8), value: [1], timestampMs: nil, token: UInt64(t))
            }
            let whileDown = collect(1, within: .seconds(2))
            cluster.setBroker(1, up: true)
            let afterUp = collect(10, within: .seconds(30))
            var stored: Int64 = 0
            for p in 0..<3 { stored += try producer.queryWatermarks(topic: "captured", partition: Int32(p), timeoutMs: 5000).high }
            #expect(producer.fatalError == nil && producer.outstanding == 0)
            return (first, whileDown, afterUp, stored)
        }
        #expect(first.map(\.token).sorted() == Array(1...100) && first.allSatisfy { $0.error == nil })
        #expect(whileDown.isEmpty, "acknowledged while the broker was down: \(whileDown.map(\.token))")
        #expect(afterUp.map(\.token).sorted() == Array(101...110) && afterUp.allSatisfy { $0.error == nil })
        #expect(stored == 110)
    }

    @Test("the delivery wake-up descriptor becomes readable when a report arrives, and is emptied by serving it")
    func deliveryWakeDescriptor() async throws {
        let (idle, woke, served, after) = try await BlockingThread.run(name: "kafka-test") {
            () throws -> (Bool, Duration?, [UInt64], Bool) in
            let cluster = try KafkaMockCluster(brokers: 1)
            try cluster.createTopic("captured", partitions: 1)
            let producer = try KafkaProducer(idempotent: KafkaConfiguration([
                ("bootstrap.servers", cluster.bootstrapServers), ("log_level", "2")]))
            guard let fd = producer.deliveryWakeFD else { return (false, nil, [], false) }
            func readable(within ms: Int32) -> Bool {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                return poll(&pfd, 1, ms) > 0
            }
            // Nothing enqueued: nothing to wake for (after whatever start-up events were served).
            _ = producer.pollDeliveries(timeoutMs: 200)
            let idle = !readable(within: 300)
            let start = ContinuousClock.now
            _ = try producer.enqueue(topic: "captured", key: [1], value: [2], timestampMs: nil, token: 7)
            var woke: Duration?
            let deadline = start.advanced(by: .seconds(20))
            while woke == nil && ContinuousClock.now < deadline {
                if readable(within: 100) { woke = ContinuousClock.now - start }
            }
            // What woke it is served without waiting (another event could come first: served then).
            var served: [UInt64] = []
            while served.isEmpty && woke != nil && ContinuousClock.now < deadline {
                served += producer.pollDeliveries(timeoutMs: 0).map(\.token)
                if served.isEmpty { _ = readable(within: 100) }
            }
            return (idle, woke, served, !readable(within: 200))
        }
        #expect(idle, "the descriptor was readable with nothing outstanding")
        #expect(woke != nil, "no wake-up within 20 s of a delivery")
        #expect(served == [7])
        #expect(after, "still readable after the report was served")
    }
}
