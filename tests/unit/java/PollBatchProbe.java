import java.lang.reflect.Field;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.locks.ReentrantLock;
import org.pytorch.serve.job.Job;
import org.pytorch.serve.util.messages.RequestInput;
import org.pytorch.serve.util.messages.WorkerCommands;
import org.pytorch.serve.wlm.Model;

/**
 * TorchServe's Model.pollBatch, as the JVM loaded it (with or without our agent), called directly
 * with jobs in its queue: no server, no archive (tests/unit/test_batcher.py).
 *
 * <p>java -cp model-server.jar:. PollBatchProbe BATCH_SIZE MAX_BATCH_DELAY_MS ROUNDS QUEUED [locked]
 * prints "batches=ROUNDS short=N slowest_us=T": ROUNDS batches each taken with QUEUED jobs in the
 * queue, how many held fewer than min(QUEUED, BATCH_SIZE) jobs, and the slowest call. With "locked",
 * another thread holds the model's lock meanwhile, and "blocked=1" says pollBatch waited for it.
 *
 * <p>java -cp model-server.jar:. PollBatchProbe turns JOBS: two workers wait in pollBatch; JOBS jobs
 * come one at a time through Model.addJob, each when both workers wait again; prints "first=N
 * second=M", how many each worker took.
 */
public final class PollBatchProbe {
    /** A job with nothing behind it: pollBatch only reads its id, command and expiry. */
    static final class Probe extends Job {
        Probe(String id) {
            super("probe", "1.0", WorkerCommands.PREDICT, input(id));
        }

        private static RequestInput input(String id) {
            RequestInput input = new RequestInput(id);
            input.setClientExpireTS(3_600_000); // from now, in milliseconds
            return input;
        }

        @Override
        public void response(byte[] body, CharSequence type, int status, String phrase, Map<String, String> headers) {}

        @Override
        public void sendError(int status, String error) {}

        @Override
        public boolean isOpen() {
            return true;
        }
    }

    public static void main(String[] args) throws Exception {
        if ("turns".equals(args[0])) {
            turns(Integer.parseInt(args[1]));
            return;
        }
        int batchSize = Integer.parseInt(args[0]);
        int maxBatchDelay = Integer.parseInt(args[1]);
        int rounds = Integer.parseInt(args[2]);
        int queued = Integer.parseInt(args[3]);
        LinkedBlockingDeque<Job> queue = new LinkedBlockingDeque<>();
        Model model = bareModel(queue, batchSize, maxBatchDelay);
        boolean locked = args.length > 4 && "locked".equals(args[4]);
        int expected = Math.min(queued, batchSize);
        int[] shortBatches = {0};
        long[] slowest = {0};
        Runnable batches = () -> {
            Map<String, Job> batch = new HashMap<>();
            for (int round = 0; round < rounds; round++) {
                queue.clear();
                for (int i = 0; i < queued; i++) {
                    queue.add(new Probe(round + "-" + i));
                }
                batch.clear();
                long start = System.nanoTime();
                try {
                    model.pollBatch("probe-worker", 0, batch);
                } catch (InterruptedException e) {
                    return;
                }
                slowest[0] = Math.max(slowest[0], System.nanoTime() - start);
                if (batch.size() < expected) {
                    shortBatches[0]++;
                }
            }
        };
        if (!locked) {
            batches.run();
        } else {
            ReentrantLock lock = (ReentrantLock) get(model, "lock");
            lock.lock();
            Thread worker = new Thread(batches);
            worker.setDaemon(true);
            worker.start();
            worker.join(3_000);
            if (worker.isAlive()) {
                System.out.println("blocked=1");
                return;
            }
        }
        System.out.println("batches=" + rounds + " short=" + shortBatches[0] + " slowest_us=" + slowest[0] / 1000);
    }

    /** Two workers, one job at a time: who takes each. */
    private static void turns(int jobs) throws Exception {
        LinkedBlockingDeque<Job> queue = new LinkedBlockingDeque<>();
        Model model = bareModel(queue, 16, 1);
        java.util.concurrent.atomic.AtomicInteger[] taken = {
            new java.util.concurrent.atomic.AtomicInteger(), new java.util.concurrent.atomic.AtomicInteger()
        };
        java.util.concurrent.Semaphore done = new java.util.concurrent.Semaphore(0);
        Thread[] workers = new Thread[2];
        for (int w = 0; w < 2; w++) {
            int worker = w;
            Thread thread = new Thread(() -> {
                Map<String, Job> batch = new HashMap<>();
                while (true) {
                    batch.clear();
                    try {
                        model.pollBatch("probe-worker-" + worker, 0, batch);
                    } catch (InterruptedException e) {
                        return;
                    }
                    taken[worker].addAndGet(batch.size());
                    done.release(batch.size());
                }
            });
            thread.setDaemon(true);
            workers[w] = thread;
            thread.start();
        }
        for (int i = 0; i < jobs; i++) {
            waitUntilBothWait(workers);
            model.addJob(new Probe("turn-" + i));
            done.acquire();
        }
        System.out.println("first=" + taken[0].get() + " second=" + taken[1].get());
    }

    /**
     * Until both workers are parked waiting for a job (or, upstream, for the model's lock): a fixed
     * sleep is not enough on a busy machine, where the worker that took the last job may not have run
     * since, and the next job would go to the other one for that reason alone. Bounded at 10 s.
     */
    private static void waitUntilBothWait(Thread[] workers) throws InterruptedException {
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (System.nanoTime() < deadline) {
            boolean waiting = true;
            for (Thread worker : workers) {
                Thread.State state = worker.getState();
                waiting &= state == Thread.State.WAITING || state == Thread.State.TIMED_WAITING;
            }
            if (waiting) {
                return;
            }
            Thread.sleep(1);
        }
        throw new IllegalStateException("the two workers did not both wait for a job within 10 s");
    }

    /** A Model with only what pollBatch reads: its constructor wants an unpacked archive. */
    private static Model bareModel(LinkedBlockingDeque<Job> queue, int batchSize, int maxBatchDelay)
            throws Exception {
        Field unsafeField = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe");
        unsafeField.setAccessible(true);
        Object unsafe = unsafeField.get(null);
        Model model = (Model) unsafe.getClass().getMethod("allocateInstance", Class.class).invoke(unsafe, Model.class);
        ConcurrentHashMap<String, LinkedBlockingDeque<Job>> jobsDb = new ConcurrentHashMap<>();
        jobsDb.put(Model.DEFAULT_DATA_QUEUE, queue);
        set(model, "jobsDb", jobsDb);
        set(model, "lock", new ReentrantLock());
        set(model, "batchSize", batchSize);
        set(model, "maxBatchDelay", maxBatchDelay);
        return model;
    }

    private static Object get(Model model, String name) throws Exception {
        Field field = Model.class.getDeclaredField(name);
        field.setAccessible(true);
        return field.get(model);
    }

    private static void set(Model model, String name, Object value) throws Exception {
        Field field = Model.class.getDeclaredField(name);
        field.setAccessible(true);
        field.set(model, value);
    }
}
