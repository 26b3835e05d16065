import ReplicatorApp

/// The executable: nothing but wiring (the commands live in ReplicatorApp).
@main
enum RegionReplicator {
    static func main() async {
        await RegionReplicatorCommand.main()
    }
}
