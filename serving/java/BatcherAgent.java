package tinyserve.batcher;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.ProtectionDomain;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.UnaryOperator;

/**
 * A Java agent (config.properties: vmargs=-javaagent:tinyserve-batcher.jar) that rewrites two classes
 * of TorchServe 0.12.0's frontend as it loads them (serving/java/README.md): Model, so that a worker's
 * batch is the jobs queued and never waits maxBatchDelay for more, and the worker that went idle last
 * takes the next job (ModelRewrite); and WorkerThread, so that a batch goes to its Python worker
 * without two thread handoffs (WorkerThreadRewrite).
 *
 * <p>Only the classes it was written for: the build records their SHA-256 in the agent jar
 * (upstream.properties). At start-up the agent reads them from the frontend's class path, and if any
 * differs it changes nothing. Either way it says so on stderr and writes its verdict, one line, to
 * tinyserve-batcher.status in java.io.tmpdir (the run directory's tmp/, where TorchServe's launcher
 * points it): "pending" until both classes are loaded, then "installed", or "refused" or "failed", a
 * space and why. The launcher and the container's readiness check read it (serving/batcher.py).
 */
public final class BatcherAgent {
    static final String UPSTREAM = "upstream.properties";
    static final String STATUS_FILE = "tinyserve-batcher.status";

    /** The classes rewritten (internal names), in the order the frontend loads them, and how. */
    private static final Map<String, UnaryOperator<byte[]>> REWRITES = new LinkedHashMap<>();

    static {
        REWRITES.put(ModelRewrite.MODEL, ModelRewrite::rewrite);
        REWRITES.put(WorkerThreadRewrite.WORKER_THREAD, WorkerThreadRewrite::rewrite);
    }

    /** This JVM's verdict so far (null: the agent did not run here) and the classes it handed the JVM. */
    private static volatile String verdict;

    private static final Map<String, byte[]> REWRITTEN = new ConcurrentHashMap<>();

    private BatcherAgent() {}

    /**
     * A check without a server: {@code java -javaagent:tinyserve-batcher.jar -cp
     * model-server.jar:tinyserve-batcher.jar tinyserve.batcher.BatcherAgent [DIR]} loads the classes
     * as the frontend does, prints the agent's verdict and writes the classes the JVM got from it to
     * DIR (for javap).
     */
    public static void main(String[] args) throws IOException, ClassNotFoundException {
        for (String name : REWRITES.keySet()) {
            Class.forName(name.replace('/', '.'), false, ClassLoader.getSystemClassLoader());
        }
        System.out.println(verdict == null ? "absent the agent did not run in this JVM" : verdict);
        if (args.length > 0) {
            for (Map.Entry<String, byte[]> rewritten : REWRITTEN.entrySet()) {
                String simpleName = rewritten.getKey().substring(rewritten.getKey().lastIndexOf('/') + 1);
                Files.write(Paths.get(args[0], simpleName + ".class"), rewritten.getValue());
            }
        }
    }

    public static void premain(String args, Instrumentation inst) throws IOException {
        Properties upstream = upstream();
        String version = upstream.getProperty("torchserve");
        for (String name : REWRITES.keySet()) {
            String expected = upstream.getProperty("sha256." + name);
            String found = sha256(classPathBytes(name));
            if (!found.equals(expected)) {
                report("refused", notUpstream(name, version, found, expected));
                return;
            }
        }
        report("pending", "the agent waits for the frontend to load " + String.join(", ", REWRITES.keySet()));
        inst.addTransformer(new Rewrite(inst, upstream));
    }

    /** Rewrites each class once, as the JVM loads it, or leaves it as it is and says why; then steps aside. */
    private static final class Rewrite implements ClassFileTransformer {
        private final Instrumentation inst;
        private final Properties upstream;
        private final Set<String> waiting = ConcurrentHashMap.newKeySet();
        private volatile boolean failed;

        Rewrite(Instrumentation inst, Properties upstream) {
            this.inst = inst;
            this.upstream = upstream;
            waiting.addAll(REWRITES.keySet());
        }

        @Override
        public byte[] transform(
                ClassLoader loader,
                String className,
                Class<?> redefined,
                ProtectionDomain domain,
                byte[] original) {
            if (className == null || redefined != null || !waiting.remove(className)) {
                return null;
            }
            if (waiting.isEmpty()) {
                inst.removeTransformer(this);
            }
            String version = upstream.getProperty("torchserve");
            String expected = upstream.getProperty("sha256." + className);
            String found = sha256(original);
            if (!found.equals(expected)) {
                failed = true;
                report("refused", notUpstream(className, version, found, expected));
                return null;
            }
            byte[] rewritten;
            try {
                rewritten = REWRITES.get(className).apply(original);
            } catch (RuntimeException | LinkageError e) {
                failed = true;
                report(
                        "failed",
                        "the rewrite of "
                                + className
                                + " failed ("
                                + e
                                + ")."
                                + UNCHANGED
                                + " Rebuild the agent: make batcher.");
                return null;
            }
            REWRITTEN.put(className, rewritten);
            if (!failed && waiting.isEmpty()) {
                report(
                        "installed",
                        "TorchServe "
                                + version
                                + "'s Model and WorkerThread rewritten: a batch is the jobs queued (no"
                                + " maxBatchDelay wait), the worker that went idle last takes the next"
                                + " job, and a batch goes to its Python worker without a thread handoff");
            }
            return rewritten;
        }
    }

    private static final String UNCHANGED =
            " TorchServe batches with its own pollBatch, which waits up to maxBatchDelay for every batch.";

    private static String notUpstream(String name, String version, String found, String expected) {
        return name
                + " on the frontend's class path is not TorchServe "
                + version
                + "'s (sha256 "
                + found
                + ", expected "
                + expected
                + "), so the agent changed nothing."
                + UNCHANGED
                + " Port the rewrites to this TorchServe (serving/java/README.md, Upgrading TorchServe)"
                + " and run make batcher.";
    }

    /** The verdict, on stderr (TorchServe's console log) and in the status file. */
    private static void report(String state, String why) {
        String line = state + " " + why;
        verdict = line;
        boolean fine = "installed".equals(state) || "pending".equals(state);
        System.err.println("tinyserve batcher: " + (fine ? "" : "NOT installed, ") + line);
        Path status = Paths.get(System.getProperty("java.io.tmpdir"), STATUS_FILE);
        Path partial = status.resolveSibling(STATUS_FILE + ".partial");
        try {
            Files.write(partial, (line + "\n").getBytes(StandardCharsets.UTF_8));
            Files.move(partial, status, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            System.err.println("tinyserve batcher: could not write " + status + " (" + e + ")");
        }
    }

    /** What the build recorded: the TorchServe version and the SHA-256 of each class it rewrites. */
    private static Properties upstream() throws IOException {
        Properties upstream = new Properties();
        try (InputStream in = BatcherAgent.class.getClassLoader().getResourceAsStream(UPSTREAM)) {
            if (in == null) {
                throw new IOException(
                        "tinyserve batcher: " + UPSTREAM + " missing from the agent jar: make batcher");
            }
            upstream.load(in);
        }
        return upstream;
    }

    /** The class file the frontend's class loader would load; null when there is none. */
    private static byte[] classPathBytes(String name) throws IOException {
        try (InputStream in = ClassLoader.getSystemResourceAsStream(name + ".class")) {
            if (in == null) {
                return null;
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            byte[] buffer = new byte[8192];
            for (int n; (n = in.read(buffer)) > 0; ) {
                out.write(buffer, 0, n);
            }
            return out.toByteArray();
        }
    }

    private static String sha256(byte[] data) {
        if (data == null) {
            return "missing";
        }
        try {
            StringBuilder hex = new StringBuilder();
            for (byte b : MessageDigest.getInstance("SHA-256").digest(data)) {
                hex.append(String.format("%02x", b));
            }
            return hex.toString();
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
