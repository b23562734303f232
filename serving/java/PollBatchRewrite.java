package tinyserve.batcher;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassVisitor;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.Label;
import org.objectweb.asm.MethodVisitor;
import org.objectweb.asm.Opcodes;

/**
 * The rewrite of TorchServe 0.12.0's org.pytorch.serve.wlm.Model our agent applies at class load:
 * in pollBatch, the loop that fills a batch after its first job stops waiting.
 *
 * <p>Two instructions change, both in pollBatch and both into calls of {@link QueuedJobs} that take
 * and leave the same values on the stack, so nothing else in the method moves:
 *
 * <ul>
 *   <li>the timed {@code jobsQueue.poll(maxDelay, MILLISECONDS)} (the one whose timeout is the local
 *       holding maxBatchDelay) becomes {@code QueuedJobs.poll(jobsQueue, maxDelay, MILLISECONDS)},
 *       which is {@code jobsQueue.poll()};
 *   <li>that local's start value ({@code (long) maxBatchDelay}) passes through {@code
 *       QueuedJobs.noDeadline}, so the countdown after each job never ends a batch early.
 * </ul>
 *
 * <p>Anything else in the class is copied as it is. If the method does not have exactly that shape
 * the rewrite fails, and the agent leaves the class unchanged.
 */
final class PollBatchRewrite {
    static final String MODEL = "org/pytorch/serve/wlm/Model";
    private static final String METHOD = "pollBatch";
    private static final String METHOD_DESCRIPTOR = "(Ljava/lang/String;JLjava/util/Map;)V";
    private static final String DELAY_FIELD = "maxBatchDelay";
    private static final String QUEUE = "java/util/concurrent/LinkedBlockingDeque";
    private static final String TIMED_POLL = "(JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";

    private PollBatchRewrite() {}

    /** The rewritten class; IllegalStateException when pollBatch is not the method we expect. */
    static byte[] rewrite(byte[] model) {
        ClassReader reader = new ClassReader(model);
        // The reader handed to the writer: methods we leave alone are copied byte for byte, and
        // the same-shaped stack needs neither new frames nor a new max stack.
        ClassWriter writer = new ClassWriter(reader, 0);
        Finder finder = new Finder(writer);
        reader.accept(finder, 0);
        if (finder.methods != 1 || finder.polls != 1 || finder.deadlines != 1) {
            throw new IllegalStateException(
                    "Model.pollBatch has not the shape this agent rewrites (pollBatch methods "
                            + finder.methods
                            + ", timed polls on the maxBatchDelay local "
                            + finder.polls
                            + ", maxBatchDelay reads "
                            + finder.deadlines
                            + "; expected 1 each)");
        }
        return writer.toByteArray();
    }

    private static final class Finder extends ClassVisitor {
        int methods;
        int polls;
        int deadlines;

        Finder(ClassVisitor next) {
            super(Opcodes.ASM9, next);
        }

        @Override
        public MethodVisitor visitMethod(
                int access, String name, String descriptor, String signature, String[] exceptions) {
            MethodVisitor next = super.visitMethod(access, name, descriptor, signature, exceptions);
            if (!METHOD.equals(name) || !METHOD_DESCRIPTOR.equals(descriptor)) {
                return next;
            }
            methods++;
            return new PollBatch(next, this);
        }
    }

    /**
     * Follows pollBatch's instructions as they stream past: {@code getfield maxBatchDelay; i2l;
     * lstore n} marks local n as the batch's deadline, and a timed poll whose timeout was the last
     * {@code lload n} (only the time unit's {@code getstatic} between) is the one that waits.
     */
    private static final class PollBatch extends MethodVisitor {
        private final Finder found;
        private int afterDelayField; // 1: getfield maxBatchDelay seen, 2: then i2l
        private int deadlineLocal = -1;
        private int loadedLocal = -1; // the local the last lload pushed, while only getstatic follow

        PollBatch(MethodVisitor next, Finder found) {
            super(Opcodes.ASM9, next);
            this.found = found;
        }

        @Override
        public void visitFieldInsn(int opcode, String owner, String name, String descriptor) {
            afterDelayField =
                    opcode == Opcodes.GETFIELD && MODEL.equals(owner) && DELAY_FIELD.equals(name) ? 1 : 0;
            if (opcode != Opcodes.GETSTATIC) {
                loadedLocal = -1;
            }
            super.visitFieldInsn(opcode, owner, name, descriptor);
        }

        @Override
        public void visitInsn(int opcode) {
            super.visitInsn(opcode);
            if (afterDelayField == 1 && opcode == Opcodes.I2L) {
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC,
                        QueuedJobs.NAME,
                        "noDeadline",
                        QueuedJobs.NO_DEADLINE_DESCRIPTOR,
                        false);
                found.deadlines++;
                afterDelayField = 2;
            } else {
                afterDelayField = 0;
            }
            loadedLocal = -1;
        }

        @Override
        public void visitVarInsn(int opcode, int local) {
            if (afterDelayField == 2 && opcode == Opcodes.LSTORE) {
                deadlineLocal = local;
            }
            afterDelayField = 0;
            loadedLocal = opcode == Opcodes.LLOAD ? local : -1;
            super.visitVarInsn(opcode, local);
        }

        @Override
        public void visitMethodInsn(
                int opcode, String owner, String name, String descriptor, boolean isInterface) {
            boolean waits =
                    opcode == Opcodes.INVOKEVIRTUAL
                            && QUEUE.equals(owner)
                            && "poll".equals(name)
                            && TIMED_POLL.equals(descriptor)
                            && deadlineLocal >= 0
                            && loadedLocal == deadlineLocal;
            afterDelayField = 0;
            loadedLocal = -1;
            if (waits) {
                found.polls++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC, QueuedJobs.NAME, "poll", QueuedJobs.POLL_DESCRIPTOR, false);
            } else {
                super.visitMethodInsn(opcode, owner, name, descriptor, isInterface);
            }
        }

        @Override
        public void visitLdcInsn(Object value) {
            afterDelayField = 0;
            loadedLocal = -1;
            super.visitLdcInsn(value);
        }

        @Override
        public void visitJumpInsn(int opcode, Label label) {
            afterDelayField = 0;
            loadedLocal = -1;
            super.visitJumpInsn(opcode, label);
        }

        @Override
        public void visitTypeInsn(int opcode, String type) {
            afterDelayField = 0;
            loadedLocal = -1;
            super.visitTypeInsn(opcode, type);
        }

        @Override
        public void visitIntInsn(int opcode, int operand) {
            afterDelayField = 0;
            loadedLocal = -1;
            super.visitIntInsn(opcode, operand);
        }

        @Override
        public void visitIincInsn(int local, int increment) {
            afterDelayField = 0;
            loadedLocal = -1;
            super.visitIincInsn(local, increment);
        }
    }
}
