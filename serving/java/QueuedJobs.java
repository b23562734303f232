package tinyserve.batcher;

import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.TimeUnit;

/**
 * What TorchServe 0.12.0's Model.pollBatch calls, once our agent has rewritten it, where it waited
 * for a batch to fill: the jobs queued now, never a wait (serving/java/README.md).
 *
 * <p>Loaded by the frontend's own class loader from the agent jar, so it must not use ASM.
 */
public final class QueuedJobs {
    /** Internal name, as the rewritten call names it. */
    static final String NAME = "tinyserve/batcher/QueuedJobs";

    static final String POLL_DESCRIPTOR =
            "(Ljava/util/concurrent/LinkedBlockingDeque;JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";

    static final String NO_DEADLINE_DESCRIPTOR = "(J)J";

    private QueuedJobs() {}

    /**
     * In place of {@code queue.poll(maxDelay, MILLISECONDS)}, with the same arguments so the rewrite
     * changes one instruction: the next job if one is queued, else null at once.
     */
    public static <E> E poll(LinkedBlockingDeque<E> queue, long ignoredTimeout, TimeUnit ignoredUnit) {
        return queue.poll();
    }

    /**
     * In place of the batch's deadline (maxBatchDelay, counted down as jobs are taken): none, so a
     * millisecond tick while the queued jobs are taken does not cut the batch short.
     */
    public static long noDeadline(long ignoredMaxBatchDelay) {
        return Long.MAX_VALUE;
    }
}
