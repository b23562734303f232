package tinyserve.batcher;

import org.objectweb.asm.ClassReader;
import org.objectweb.asm.ClassVisitor;
import org.objectweb.asm.ClassWriter;
import org.objectweb.asm.MethodVisitor;
import org.objectweb.asm.Opcodes;

/**
 * The rewrite of TorchServe 0.12.0's org.pytorch.serve.wlm.WorkerThread our agent applies at class
 * load: a batch goes to the Python worker without two thread handoffs.
 *
 * <p>Upstream's run() hands each batch's write to the common pool ({@code
 * CompletableFuture.runAsync(() -> backendChannel.get(i).writeAndFlush(req).sync())}): a pool thread
 * wakes, queues the write on the connection's event loop, and sleeps until the event loop has written
 * it, then wakes again. Two instructions change, into calls of {@link BackendWrites} that take and
 * leave the same values on the stack:
 *
 * <ul>
 *   <li>in run(), {@code CompletableFuture.runAsync(write)} becomes {@code
 *       BackendWrites.runHere(write)}: the worker thread queues the write itself;
 *   <li>in the lambda that writes ({@code writeAndFlush} then {@code sync}), {@code sync()} becomes
 *       {@code BackendWrites.noWait(future)}.
 * </ul>
 *
 * <p>Anything else in the class is copied as it is (connect()'s own {@code sync()} included). If the
 * class does not have exactly that shape the rewrite fails, and the agent leaves it unchanged.
 */
final class WorkerThreadRewrite {
    static final String WORKER_THREAD = "org/pytorch/serve/wlm/WorkerThread";
    private static final String FUTURE = "java/util/concurrent/CompletableFuture";
    private static final String RUN_ASYNC = "(Ljava/lang/Runnable;)Ljava/util/concurrent/CompletableFuture;";
    private static final String CHANNEL = "io/netty/channel/Channel";
    private static final String CHANNEL_FUTURE = "io/netty/channel/ChannelFuture";

    private WorkerThreadRewrite() {}

    /** The rewritten class; IllegalStateException when it is not the class we expect. */
    static byte[] rewrite(byte[] workerThread) {
        ClassReader reader = new ClassReader(workerThread);
        ClassWriter writer = new ClassWriter(reader, 0);
        Finder finder = new Finder(writer);
        reader.accept(finder, 0);
        if (finder.handoffs != 1 || finder.waits != 1) {
            throw new IllegalStateException(
                    "WorkerThread has not the shape this agent rewrites (runAsync calls in run() "
                            + finder.handoffs
                            + ", writeAndFlush().sync() in a lambda "
                            + finder.waits
                            + "; expected 1 each)");
        }
        return writer.toByteArray();
    }

    private static final class Finder extends ClassVisitor {
        int handoffs;
        int waits;

        Finder(ClassVisitor next) {
            super(Opcodes.ASM9, next);
        }

        @Override
        public MethodVisitor visitMethod(
                int access, String name, String descriptor, String signature, String[] exceptions) {
            MethodVisitor next = super.visitMethod(access, name, descriptor, signature, exceptions);
            if ("run".equals(name) && "()V".equals(descriptor)) {
                return new Run(next, this);
            }
            if ((access & Opcodes.ACC_SYNTHETIC) != 0 && name.startsWith("lambda$run$")) {
                return new Write(next, this);
            }
            return next;
        }
    }

    /** run(): the one runAsync(Runnable) call. */
    private static final class Run extends MethodVisitor {
        private final Finder found;

        Run(MethodVisitor next, Finder found) {
            super(Opcodes.ASM9, next);
            this.found = found;
        }

        @Override
        public void visitMethodInsn(
                int opcode, String owner, String name, String descriptor, boolean isInterface) {
            if (opcode == Opcodes.INVOKESTATIC
                    && FUTURE.equals(owner)
                    && "runAsync".equals(name)
                    && RUN_ASYNC.equals(descriptor)) {
                found.handoffs++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC,
                        BackendWrites.NAME,
                        "runHere",
                        BackendWrites.RUN_HERE_DESCRIPTOR,
                        false);
            } else {
                super.visitMethodInsn(opcode, owner, name, descriptor, isInterface);
            }
        }
    }

    /** run()'s lambda: the sync() right after Channel.writeAndFlush(Object). */
    private static final class Write extends MethodVisitor {
        private final Finder found;
        private boolean afterWrite;

        Write(MethodVisitor next, Finder found) {
            super(Opcodes.ASM9, next);
            this.found = found;
        }

        @Override
        public void visitMethodInsn(
                int opcode, String owner, String name, String descriptor, boolean isInterface) {
            boolean waits =
                    afterWrite
                            && opcode == Opcodes.INVOKEINTERFACE
                            && CHANNEL_FUTURE.equals(owner)
                            && "sync".equals(name)
                            && ("()L" + CHANNEL_FUTURE + ";").equals(descriptor);
            afterWrite =
                    opcode == Opcodes.INVOKEINTERFACE
                            && CHANNEL.equals(owner)
                            && "writeAndFlush".equals(name)
                            && "(Ljava/lang/Object;)Lio/netty/channel/ChannelFuture;".equals(descriptor);
            if (waits) {
                found.waits++;
                super.visitMethodInsn(
                        Opcodes.INVOKESTATIC,
                        BackendWrites.NAME,
                        "noWait",
                        BackendWrites.NO_WAIT_DESCRIPTOR,
                        false);
            } else {
                super.visitMethodInsn(opcode, owner, name, descriptor, isInterface);
            }
        }
    }
}
