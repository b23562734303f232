package tinyserve.batcher;

import java.util.concurrent.CompletableFuture;

/**
 * What TorchServe 0.12.0's WorkerThread calls, once our agent has rewritten it, to hand a batch to its
 * Python worker: the write is queued on the worker connection's event loop by the worker thread
 * itself, and nobody waits for it (serving/java/README.md).
 *
 * <p>Loaded by the frontend's own class loader from the agent jar, so it must not use ASM.
 */
public final class BackendWrites {
    /** Internal name, as the rewritten calls name it. */
    static final String NAME = "tinyserve/batcher/BackendWrites";

    static final String RUN_HERE_DESCRIPTOR =
            "(Ljava/lang/Runnable;)Ljava/util/concurrent/CompletableFuture;";

    static final String NO_WAIT_DESCRIPTOR = "(Ljava/lang/Object;)Ljava/lang/Object;";

    private BackendWrites() {}

    /**
     * In place of {@code CompletableFuture.runAsync(write)}: the write runs on the calling worker
     * thread, which only queues it on the connection's event loop (Netty does that for any thread),
     * instead of waking a common-pool thread to do the same.
     */
    public static CompletableFuture<Void> runHere(Runnable write) {
        write.run();
        return CompletableFuture.completedFuture(null);
    }

    /**
     * In place of {@code writeAndFlush(request).sync()}: the future as it is, not waited for. Upstream
     * waited on a common-pool thread and dropped whatever the wait threw (nobody joins that
     * CompletableFuture); a write that fails still ends in the worker thread's response timeout.
     */
    public static Object noWait(Object writeFuture) {
        return writeFuture;
    }
}
