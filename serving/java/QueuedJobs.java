package tinyserve.batcher;

import java.util.ArrayDeque;
import java.util.Collections;
import java.util.Deque;
import java.util.Map;
import java.util.WeakHashMap;
import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;

/**
 * What TorchServe 0.12.0's Model calls, once our agent has rewritten it (ModelRewrite), to hand jobs to
 * its workers: a batch is the jobs queued now and never waits to fill, no model-wide lock, and an
 * idle worker is woken last in, first out (serving/java/README.md).
 *
 * <p>Loaded by the frontend's own class loader from the agent jar, so it must not use ASM.
 */
public final class QueuedJobs {
    /** Internal name, as the rewritten calls name it. */
    static final String NAME = "tinyserve/batcher/QueuedJobs";

    static final String POLL_DESCRIPTOR =
            "(Ljava/util/concurrent/LinkedBlockingDeque;JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";

    static final String NO_DEADLINE_DESCRIPTOR = "(J)J";

    static final String NO_LOCK_DESCRIPTOR = "(Ljava/util/concurrent/locks/ReentrantLock;)V";

    /**
     * An idle worker looks at the queue again after this long even if nobody woke it, so a job put in
     * the queue some other way than through the calls below still goes out.
     */
    private static final long RECHECK_NANOS = TimeUnit.MILLISECONDS.toNanos(100);

    /** Each model's idle workers, by the model's job queue. */
    private static final Map<LinkedBlockingDeque<?>, IdleWorkers> IDLE =
            Collections.synchronizedMap(new WeakHashMap<>());

    /** A model's idle workers, the one that went idle last on top; guarded by its own monitor. */
    private static final class IdleWorkers {
        final Deque<Thread> stack = new ArrayDeque<>();

        /** Workers taken off the stack and woken for a job that have not looked at the queue yet. */
        int woken;
    }

    private QueuedJobs() {}

    /** The descriptor of our static method in place of a LinkedBlockingDeque method of this descriptor. */
    static String enqueue(String queueMethodDescriptor) {
        return "(Ljava/util/concurrent/LinkedBlockingDeque;" + queueMethodDescriptor.substring(1);
    }

    /**
     * In place of {@code queue.poll(maxDelay, MILLISECONDS)}, with the same arguments so the rewrite
     * changes one instruction: the next job if one is queued, else null at once.
     */
    public static <E> E poll(LinkedBlockingDeque<E> queue, long ignoredTimeout, TimeUnit ignoredUnit) {
        return queue.poll();
    }

    /**
     * In place of {@code queue.poll(Long.MAX_VALUE, MILLISECONDS)}, the wait for a batch's first job:
     * the same, except that of the model's idle workers the one that went idle last gets the next job.
     * Upstream's waiters queue first in, first out, so at one request at a time the model's workers
     * took turns, each with the caches the others had just emptied.
     */
    public static <E> E firstJob(LinkedBlockingDeque<E> queue, long ignoredTimeout, TimeUnit ignoredUnit)
            throws InterruptedException {
        E job = queue.poll();
        if (job != null) {
            return job;
        }
        IdleWorkers idle = idle(queue);
        Thread self = Thread.currentThread();
        boolean onStack = false;
        try {
            while (true) {
                boolean mayTake;
                synchronized (idle) {
                    if (!onStack) { // first time round
                        idle.stack.push(self);
                        onStack = true;
                        mayTake = true;
                    } else if (!idle.stack.contains(self)) { // taken off the stack and woken for a job
                        idle.woken--;
                        idle.stack.push(self);
                        mayTake = true;
                    } else { // a recheck leaves the queued jobs to the workers woken for them
                        mayTake = queue.size() > idle.woken;
                    }
                }
                if (mayTake) {
                    job = queue.poll(); // put in the queue before this worker was on the stack to be woken
                    if (job != null) {
                        return job;
                    }
                }
                LockSupport.parkNanos(idle, RECHECK_NANOS); // a recheck keeps its place on the stack
                if (Thread.interrupted()) {
                    leave(idle, self);
                    onStack = false;
                    if (!queue.isEmpty()) {
                        wakeOne(idle); // the wake-up this worker may have taken
                    }
                    throw new InterruptedException();
                }
            }
        } finally {
            if (onStack) {
                leave(idle, self);
            }
        }
    }

    /** In place of {@code queue.offer(job)}: that, and the worker that went idle last woken for it. */
    public static <E> boolean offer(LinkedBlockingDeque<E> queue, E job) {
        boolean queued = queue.offer(job);
        if (queued) {
            wakeOne(idle(queue));
        }
        return queued;
    }

    /** In place of {@code queue.addFirst(job)}: that, and the worker that went idle last woken for it. */
    public static <E> void addFirst(LinkedBlockingDeque<E> queue, E job) {
        queue.addFirst(job);
        wakeOne(idle(queue));
    }

    /**
     * In place of the batch's deadline (maxBatchDelay, counted down as jobs are taken): none, so a
     * millisecond tick while the queued jobs are taken does not cut the batch short.
     */
    public static long noDeadline(long ignoredMaxBatchDelay) {
        return Long.MAX_VALUE;
    }

    /**
     * In place of {@code lock.lockInterruptibly()} on the model's lock: the workers of a model wait
     * for their first job each on their own (firstJob), so a job wakes one worker and nothing else
     * (with the lock, each job also woke the next worker only for it to take the lock and wait
     * again). pollBatch's finally unlocks only a lock the thread holds, so it leaves this one alone.
     */
    public static void noLock(ReentrantLock ignoredModelLock) throws InterruptedException {
        if (Thread.interrupted()) {
            throw new InterruptedException();
        }
    }

    private static IdleWorkers idle(LinkedBlockingDeque<?> queue) {
        synchronized (IDLE) {
            return IDLE.computeIfAbsent(queue, q -> new IdleWorkers());
        }
    }

    /** Off the stack; or, if it was already taken off to be woken, no longer counted as woken. */
    private static void leave(IdleWorkers idle, Thread self) {
        synchronized (idle) {
            if (!idle.stack.remove(self)) {
                idle.woken--;
            }
        }
    }

    private static void wakeOne(IdleWorkers idle) {
        Thread last;
        synchronized (idle) {
            last = idle.stack.poll();
            if (last != null) {
                idle.woken++;
            }
        }
        if (last != null) {
            LockSupport.unpark(last);
        }
    }
}
