public import ServiceLifecycle

/// Runs `body`, calling `onStop` on graceful shutdown (SIGTERM via ServiceGroup) or cancellation.
func withGracefulShutdownAndCancellation<T: Sendable>(onStop: @escaping @Sendable () -> Void,
                                                      _ body: () async -> T) async -> T {
    await withTaskCancellationHandler {
        await withGracefulShutdownHandler {
            await body()
        } onGracefulShutdown: {
            onStop()
        }
    } onCancel: {
        onStop()
    }
}

extension RegionPipeline: Service {}
