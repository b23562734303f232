package tinyserve.batcher;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.ProtectionDomain;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentSkipListSet;

/**
 * A Java agent (config.properties: vmargs=-javaagent:tinyserve-batcher.jar) that loads our Model.java
 * (TorchServe 0.12.0's, with a batcher that does not wait) in place of the frontend jar's.
 *
 * <p>The agent jar (built by serving/batcher.py) holds the compiled replacement classes under
 * replacement/ and, in replaced.properties, the SHA-256 of each class it replaces as the jar it was
 * compiled against has it. At start-up the agent reads those classes from the frontend's own class
 * path and compares: only if every one is byte for byte the one the replacement was compiled
 * against does it replace them; otherwise it says so on stderr and TorchServe runs unchanged.
 */
public final class BatcherAgent {
    static final String REPLACED = "replaced.properties";
    static final String REPLACEMENT_DIR = "replacement/";
    /** The classes this agent has handed the JVM so far (main prints them). */
    static final Set<String> REPLACED_SO_FAR = new ConcurrentSkipListSet<>();

    private BatcherAgent() {}

    /**
     * A check without a server: {@code java -javaagent:tinyserve-batcher.jar -cp
     * model-server.jar:tinyserve-batcher.jar tinyserve.batcher.BatcherAgent} loads every class the
     * agent would replace, as the frontend does, and prints "replaced:" and those it did replace.
     */
    public static void main(String[] args) throws IOException, ClassNotFoundException {
        for (String name : new TreeSet<>(replaced().stringPropertyNames())) {
            Class.forName(name.replace('/', '.'), false, ClassLoader.getSystemClassLoader());
        }
        System.out.println("replaced: " + String.join(" ", REPLACED_SO_FAR));
    }

    public static void premain(String args, Instrumentation inst) throws IOException {
        Properties expected = replaced();
        Map<String, byte[]> replacements = new HashMap<>();
        for (String name : expected.stringPropertyNames()) {
            byte[] original;
            try (InputStream in = ClassLoader.getSystemResourceAsStream(name + ".class")) {
                original = in == null ? null : readAll(in);
            }
            String found = original == null ? "missing" : sha256(original);
            if (!found.equals(expected.getProperty(name))) {
                System.err.println(
                        "tinyserve batcher: NOT installed, TorchServe's batching unchanged: "
                                + name
                                + " on the class path is not the class serving/java/Model.java was"
                                + " compiled against (sha256 "
                                + found
                                + ", expected "
                                + expected.getProperty(name)
                                + "). Rebuild the agent against this TorchServe: make batcher.");
                return;
            }
            try (InputStream in = resource(REPLACEMENT_DIR + name + ".class")) {
                replacements.put(name, readAll(in));
            }
        }
        inst.addTransformer(new Replace(replacements));
        System.err.println(
                "tinyserve batcher: installed (a worker's batch takes the jobs queued, no"
                        + " maxBatchDelay wait): "
                        + String.join(", ", replacements.keySet()));
    }

    /** Hands the JVM our bytes for each replaced class, when it first loads it. */
    private static final class Replace implements ClassFileTransformer {
        private final Map<String, byte[]> replacements;

        Replace(Map<String, byte[]> replacements) {
            this.replacements = replacements;
        }

        @Override
        public byte[] transform(
                ClassLoader loader,
                String className,
                Class<?> redefined,
                ProtectionDomain domain,
                byte[] original) {
            byte[] replacement = className == null ? null : replacements.get(className);
            if (replacement != null) {
                REPLACED_SO_FAR.add(className);
            }
            return replacement;
        }
    }

    /** Class name (internal form) -> SHA-256 of the class it replaces, as the build recorded it. */
    private static Properties replaced() throws IOException {
        Properties expected = new Properties();
        try (InputStream in = resource(REPLACED)) {
            expected.load(in);
        }
        return expected;
    }

    private static InputStream resource(String name) throws IOException {
        InputStream in = BatcherAgent.class.getClassLoader().getResourceAsStream(name);
        if (in == null) {
            throw new IOException("tinyserve batcher: " + name + " missing from the agent jar");
        }
        return in;
    }

    private static byte[] readAll(InputStream in) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        byte[] buffer = new byte[8192];
        for (int n; (n = in.read(buffer)) > 0; ) {
            out.write(buffer, 0, n);
        }
        return out.toByteArray();
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
