package tinyserve.batcher;

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
import java.util.Properties;

/**
 * A Java agent (config.properties: vmargs=-javaagent:tinyserve-batcher.jar) that rewrites TorchServe
 * 0.12.0's Model.pollBatch as the frontend loads it, so that a worker's batch is the jobs queued and
 * never waits maxBatchDelay for more (PollBatchRewrite, serving/java/README.md).
 *
 * <p>Only the class it was written for: the build records that class's SHA-256 in the agent jar
 * (upstream.properties), and a Model whose bytes differ is left as it is. Either way the agent says
 * so on stderr and writes its verdict, one line, to tinyserve-batcher.status in java.io.tmpdir (the
 * run directory's tmp/, where TorchServe's launcher points it): "pending", then "installed",
 * "refused" or "failed", a space and why. The launcher and the container's readiness check read it
 * (serving/batcher.py).
 */
public final class BatcherAgent {
    static final String UPSTREAM = "upstream.properties";
    static final String STATUS_FILE = "tinyserve-batcher.status";

    private BatcherAgent() {}

    /** This JVM's verdict so far (null: the agent did not run here) and the class it handed the JVM. */
    private static volatile String verdict;

    private static volatile byte[] rewritten;

    /**
     * A check without a server: {@code java -javaagent:tinyserve-batcher.jar -cp
     * model-server.jar:tinyserve-batcher.jar tinyserve.batcher.BatcherAgent [FILE]} loads the Model
     * class as the frontend does, prints the agent's verdict and writes the class the JVM got from
     * it to FILE (for javap).
     */
    public static void main(String[] args) throws IOException, ClassNotFoundException {
        String model = upstream().getProperty("class").replace('/', '.');
        Class.forName(model, false, ClassLoader.getSystemClassLoader());
        System.out.println(verdict == null ? "absent the agent did not run in this JVM" : verdict);
        if (args.length > 0 && rewritten != null) {
            Files.write(Paths.get(args[0]), rewritten);
        }
    }

    public static void premain(String args, Instrumentation inst) throws IOException {
        Properties upstream = upstream();
        report("pending", "the agent waits for the frontend to load " + upstream.getProperty("class"));
        inst.addTransformer(new Rewrite(inst, upstream));
    }

    /** Rewrites the one class once, or leaves it as it is and says why; then steps aside. */
    private static final class Rewrite implements ClassFileTransformer {
        private final Instrumentation inst;
        private final String target;
        private final String expected;
        private final String version;

        Rewrite(Instrumentation inst, Properties upstream) {
            this.inst = inst;
            this.target = upstream.getProperty("class");
            this.expected = upstream.getProperty("sha256");
            this.version = upstream.getProperty("torchserve");
        }

        @Override
        public byte[] transform(
                ClassLoader loader,
                String className,
                Class<?> redefined,
                ProtectionDomain domain,
                byte[] original) {
            if (!target.equals(className) || redefined != null) {
                return null;
            }
            inst.removeTransformer(this);
            String unchanged =
                    " TorchServe batches with its own pollBatch, which waits up to maxBatchDelay for"
                            + " every batch.";
            String found = sha256(original);
            if (!found.equals(expected)) {
                report(
                        "refused",
                        className
                                + " is not TorchServe "
                                + version
                                + "'s (sha256 "
                                + found
                                + ", expected "
                                + expected
                                + ")."
                                + unchanged
                                + " Port the rewrite to this TorchServe (serving/java/README.md,"
                                + " Upgrading TorchServe) and run make batcher.");
                return null;
            }
            try {
                rewritten = PollBatchRewrite.rewrite(original);
                report(
                        "installed",
                        "TorchServe "
                                + version
                                + "'s Model.pollBatch rewritten: a worker's batch takes the jobs"
                                + " queued, no maxBatchDelay wait");
                return rewritten;
            } catch (RuntimeException | LinkageError e) {
                report(
                        "failed",
                        "the rewrite of "
                                + className
                                + " failed ("
                                + e
                                + ")."
                                + unchanged
                                + " Rebuild the agent: make batcher.");
                return null;
            }
        }
    }

    /** The verdict, on stderr (TorchServe's console log) and in the status file. */
    private static void report(String state, String why) {
        String line = state + " " + why;
        verdict = line;
        boolean fine = "installed".equals(state) || "pending".equals(state);
        System.err.println("tinyserve batcher: " + (fine ? "" : "NOT installed, ") + line);
        Path status = statusFile();
        Path partial = status.resolveSibling(STATUS_FILE + ".partial");
        try {
            Files.write(partial, (line + "\n").getBytes(StandardCharsets.UTF_8));
            Files.move(partial, status, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            System.err.println("tinyserve batcher: could not write " + status + " (" + e + ")");
        }
    }

    private static Path statusFile() {
        return Paths.get(System.getProperty("java.io.tmpdir"), STATUS_FILE);
    }

    /** What the build recorded: the class rewritten, its SHA-256 and the TorchServe it comes from. */
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

    private static String sha256(byte[] data) {
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
