package tinyserve.batcher;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassVisitor;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.Handle;
import org.objectweb.asm.Label;
import org.objectweb.asm.MethodVisitor;
import org.objectweb.asm.Opcodes;

/**
 * The rewrite of TorchServe 0.12.0's org.pytorch.serve.wlm.Model our agent applies at class load: how
 * a model's workers take their jobs from its queue.
 *
 * <p>Every change turns one instruction into a call of {@link QueuedJobs} that takes and leaves the
 * same values on the stack, so nothing else in a method moves:
 *
 * <ul>
 *   <li>pollBatch, {@code lock.lockInterruptibly()} on the model's lock: {@code QueuedJobs.noLock}; the
 *       model's workers no longer queue for a lock before they wait for work;
 *   <li>pollBatch, the wait for the batch's first job ({@code jobsQueue.poll(Long.MAX_VALUE,
 *       MILLISECONDS)}): {@code QueuedJobs.firstJob}, where the idle worker that went idle last gets
 *       the next job (its caches are the warm ones);
 *   <li>addJob(Job) and addFirst(Job), the job put in the queue: {@code QueuedJobs.offer} and {@code
 *       QueuedJobs.addFirst}, which also wake that worker; and pollBatch's own {@code addFirst} (a
 *       describe job put back) the same;
 *   <li>pollBatch, the timed {@code jobsQueue.poll(maxDelay, MILLISECONDS)} that fills the batch (its
 *       timeout is the local holding maxBatchDelay): {@code QueuedJobs.poll}, the jobs queued now;
 *   <li>pollBatch, that local's start value ({@code (long) maxBatchDelay}): {@code
 *       QueuedJobs.noDeadline}, so the countdown after each job never ends a batch early.
 * </ul>
 *
 * <p>Anything else in the class is copied as it is. If the methods do not have exactly that shape the
 * rewrite fails, and the agent leaves the class unchanged.
 */
final class ModelRewrite {
    static final String MODEL = "org/pytorch/serve/wlm/Model";
    private static final String POLL_BATCH = "(Ljava/lang/String;JLjava/util/Map;)V";
    private static final String ONE_JOB = "(Lorg/pytorch/serve/job/Job;)";
    private static final String DELAY_FIELD = "maxBatchDelay";
    private static final String QUEUE = "java/util/concurrent/LinkedBlockingDeque";
    private static final String TIMED_POLL = "(JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";
    private static final String LOCK = "java/util/concurrent/locks/ReentrantLock";

    private ModelRewrite() {}

    /** The rewritten class; IllegalStateException when it is not the class we expect. */
    static byte[] rewrite(byte[] model) {
        ClassReader reader = new ClassReader(model);
        // The reader handed to the writer: methods we leave alone are copied byte for byte, and
        // the same-shaped stack needs neither new frames nor a new max stack.
        ClassWriter writer = new ClassWriter(reader, 0);
        Finder found = new Finder(writer);
        reader.accept(found, 0);
        String counts =
                "pollBatch "
                        + found.pollBatches
                        + ", its lockInterruptibly "
                        + found.locks
                        + ", its first-job poll "
                        + found.firstJobs
                        + ", its maxBatchDelay read "
                        + found.deadlines
                        + ", its batch poll "
                        + found.polls
                        + ", its addFirst "
                        + found.requeues
                        + "; addJob(Job)'s offer "
                        + found.offers
                        + ", addFirst(Job)'s addFirst "
                        + found.addFirsts;
        if (found.pollBatches != 1
                || found.locks != 1
                || found.firstJobs != 1
                || found.deadlines != 1
                || found.polls != 1
                || found.requeues != 1
                || found.offers != 1
                || found.addFirsts != 1) {
            throw new IllegalStateException(
                    "Model has not the shape this agent rewrites (" + counts + "; expected 1 each)");
        }
        return writer.toByteArray();
    }

    private static final class Finder extends ClassVisitor {
        int pollBatches;
        int locks;
        int firstJobs;
        int deadlines;
        int polls;
        int requeues;
        int offers;
        int addFirsts;

        Finder(ClassVisitor next) {
            super(Opcodes.ASM9, next);
        }

        @Override
        public MethodVisitor visitMethod(
                int access, String name, String descriptor, String signature, String[] exceptions) {
            MethodVisitor next = super.visitMethod(access, name, descriptor, signature, exceptions);
            if ("pollBatch".equals(name) && POLL_BATCH.equals(descriptor)) {
                pollBatches++;
                return new PollBatch(next, this);
            }
            if ("addJob".equals(name) && (ONE_JOB + "Z").equals(descriptor)) {
                return new Enqueue(next, "offer", "(Ljava/lang/Object;)Z", () -> offers++);
            }
            if ("addFirst".equals(name) && (ONE_JOB + "V").equals(descriptor)) {
                return new Enqueue(next, "addFirst", "(Ljava/lang/Object;)V", () -> addFirsts++);
            }
            return next;
        }
    }

    /** addJob(Job) or addFirst(Job): the one call that puts the job in the queue. */
    private static final class Enqueue extends MethodVisitor {
        private final String call;
        private final String descriptor;
        private final Runnable count;

        Enqueue(MethodVisitor next, String call, String descriptor, Runnable count) {
            super(Opcodes.ASM9, next);
            this.call = call;
            this.descriptor = descriptor;
            this.count = count;
        }

        @Override
        public void visitMethodInsn(
                int opcode, String owner, String name, String descriptor, boolean isInterface) {
            if (opcode == Opcodes.INVOKEVIRTUAL
                    && QUEUE.equals(owner)
                    && call.equals(name)
                    && this.descriptor.equals(descriptor)) {
                count.run();
                super.visitMethodInsn(Opcodes.INVOKESTATIC, QueuedJobs.NAME, call, QueuedJobs.enqueue(descriptor), false);
            } else {
                super.visitMethodInsn(opcode, owner, name, descriptor, isInterface);
            }
        }
    }

    /**
     * Follows pollBatch's instructions as they stream past: {@code getfield maxBatchDelay; i2l;
     * lstore n} marks local n as the batch's deadline; a timed poll whose timeout was the last {@code
     * lload n} is the one that fills the batch, and one whose timeout was {@code ldc Long.MAX_VALUE}
     * the wait for the first job (only the time unit's {@code getstatic} between).
     */
    private static final class PollBatch extends MethodVisitor {
        private final Finder found;
        private int afterDelayField; // 1: getfield maxBatchDelay seen, 2: then i2l
        private int deadlineLocal = -1;
        private int loadedLocal = -1; // the local the last lload pushed, while only getstatic follow
        private boolean loadedForever; // the last ldc was Long.MAX_VALUE, while only getstatic follow

        PollBatch(MethodVisitor next, Finder found) {
            super(Opcodes.ASM9, next);
            this.found = found;
        }

        private void other() {
            afterDelayField = 0;
            loadedLocal = -1;
            loadedForever = false;
        }

        @Override
        public void visitFieldInsn(int opcode, String owner, String name, String descriptor) {
            boolean delay = opcode == Opcodes.GETFIELD && MODEL.equals(owner) && DELAY_FIELD.equals(name);
            if (opcode != Opcodes.GETSTATIC) {
                other();
            }
            afterDelayField = delay ? 1 : 0;
            super.visitFieldInsn(opcode, owner, name, descriptor);
        }

        @Override
        public void visitInsn(int opcode) {
            super.visitInsn(opcode);
            boolean delay = afterDelayField == 1 && opcode == Opcodes.I2L;
            other();
            if (delay) {
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC,
                        QueuedJobs.NAME,
                        "noDeadline",
                        QueuedJobs.NO_DEADLINE_DESCRIPTOR,
                        false);
                found.deadlines++;
                afterDelayField = 2;
            }
        }

        @Override
        public void visitVarInsn(int opcode, int local) {
            if (afterDelayField == 2 && opcode == Opcodes.LSTORE) {
                deadlineLocal = local;
            }
            other();
            loadedLocal = opcode == Opcodes.LLOAD ? local : -1;
            super.visitVarInsn(opcode, local);
        }

        @Override
        public void visitLdcInsn(Object value) {
            other();
            loadedForever = Long.valueOf(Long.MAX_VALUE).equals(value);
            super.visitLdcInsn(value);
        }

        @Override
        public void visitMethodInsn(
                int opcode, String owner, String name, String descriptor, boolean isInterface) {
            boolean timedPoll =
                    opcode == Opcodes.INVOKEVIRTUAL
                            && QUEUE.equals(owner)
                            && "poll".equals(name)
                            && TIMED_POLL.equals(descriptor);
            boolean fills = timedPoll && deadlineLocal >= 0 && loadedLocal == deadlineLocal;
            boolean first = timedPoll && loadedForever;
            boolean lock =
                    opcode == Opcodes.INVOKEVIRTUAL
                            && LOCK.equals(owner)
                            && "lockInterruptibly".equals(name)
                            && "()V".equals(descriptor);
            boolean requeue =
                    opcode == Opcodes.INVOKEVIRTUAL
                            && QUEUE.equals(owner)
                            && "addFirst".equals(name)
                            && "(Ljava/lang/Object;)V".equals(descriptor);
            other();
            if (lock) {
                found.locks++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC, QueuedJobs.NAME, "noLock", QueuedJobs.NO_LOCK_DESCRIPTOR, false);
            } else if (first) {
                found.firstJobs++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC, QueuedJobs.NAME, "firstJob", QueuedJobs.POLL_DESCRIPTOR, false);
            } else if (fills) {
                found.polls++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC, QueuedJobs.NAME, "poll", QueuedJobs.POLL_DESCRIPTOR, false);
            } else if (requeue) {
                found.requeues++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC, QueuedJobs.NAME, "addFirst", QueuedJobs.enqueue(descriptor), false);
            } else {
                super.visitMethodInsn(opcode, owner, name, descriptor, isInterface);
            }
        }

        @Override
        public void visitJumpInsn(int opcode, Label label) {
            other();
            super.visitJumpInsn(opcode, label);
        }

        @Override
        public void visitTypeInsn(int opcode, String type) {
            other();
            super.visitTypeInsn(opcode, type);
        }

        @Override
        public void visitIntInsn(int opcode, int operand) {
            other();
            super.visitIntInsn(opcode, operand);
        }

        @Override
        public void visitIincInsn(int local, int increment) {
            other();
            super.visitIincInsn(local, increment);
        }

        @Override
        public void visitInvokeDynamicInsn(
                String name, String descriptor, Handle bootstrap, Object... arguments) {
            other();
            super.visitInvokeDynamicInsn(name, descriptor, bootstrap, arguments);
        }
    }
}
