package dev.sluice.peer;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.time.Duration;
import java.util.Properties;

/** What the command line says: the topology, its topics, and Kafka Streams' properties. */
final class Settings {
    String topology;
    String input;
    String output;
    String dlq;
    /** The table topic a join reads (iot-enriched). */
    String table;
    String registryUrl = "http://127.0.0.1:8081";
    Duration windowSize = Duration.ofMinutes(1);
    Duration windowGrace = Duration.ofSeconds(10);
    final Properties streams = new Properties();
    private Registry registry;

    static final String USAGE = String.join("\n",
            "usage: run (user-login|iot-windows|iot-enriched|login-counts) --bootstrap HOST:PORT --input TOPIC --output TOPIC",
            "           [--table TOPIC] [--dlq TOPIC] [--registry URL] [--application-id ID] [--threads N]",
            "           [--state-dir DIR] [--window-size SECS] [--window-grace SECS] [--config KEY=VALUE]...");

    static Settings parse(String[] args) {
        Settings s = new Settings();
        if (args.length == 0) {
            throw new IllegalArgumentException("name a topology: user-login, iot-windows, iot-enriched or login-counts");
        }
        s.topology = args[0];
        if (!java.util.List.of("user-login", "iot-windows", "iot-enriched", "login-counts").contains(s.topology)) {
            throw new IllegalArgumentException("unknown topology " + s.topology + ": user-login, iot-windows, iot-enriched or login-counts");
        }
        for (int i = 1; i < args.length; i += 2) {
            if (i + 1 >= args.length) {
                throw new IllegalArgumentException(args[i] + " needs a value");
            }
            String v = args[i + 1];
            switch (args[i]) {
                case "--bootstrap" -> s.streams.put("bootstrap.servers", v);
                case "--input" -> s.input = v;
                case "--output" -> s.output = v;
                case "--dlq" -> s.dlq = v;
                case "--table" -> s.table = v;
                case "--registry" -> s.registryUrl = v;
                case "--application-id" -> s.streams.put("application.id", v);
                case "--threads" -> s.streams.put("num.stream.threads", v);
                case "--state-dir" -> s.streams.put("state.dir", v);
                case "--window-size" -> s.windowSize = Duration.ofSeconds(Long.parseLong(v));
                case "--window-grace" -> s.windowGrace = Duration.ofSeconds(Long.parseLong(v));
                case "--config" -> {
                    int eq = v.indexOf('=');
                    if (eq <= 0) {
                        throw new IllegalArgumentException("--config takes KEY=VALUE, not " + v);
                    }
                    s.streams.put(v.substring(0, eq), v.substring(eq + 1));
                }
                default -> throw new IllegalArgumentException("unknown flag " + args[i]);
            }
        }
        if (s.input == null || s.output == null || !s.streams.containsKey("bootstrap.servers")) {
            throw new IllegalArgumentException("--bootstrap, --input and --output are required");
        }
        if (s.dlq == null) {
            s.dlq = s.input + ".dlq";
        }
        s.streams.putIfAbsent("application.id", "kafka-streams-peer-" + s.topology);
        // Exactly-once, as sluice runs; under it Kafka Streams commits every
        // 100 ms (commit.interval.ms's default for exactly_once_v2).
        s.streams.putIfAbsent("processing.guarantee", "exactly_once_v2");
        // One node: the internal topics (changelog, suppression buffer) cannot have three replicas.
        s.streams.putIfAbsent("replication.factor", "1");
        return s;
    }

    /** The registry client, shared by the stream threads (its schema cache with them). */
    synchronized Registry registry() {
        if (registry == null) {
            registry = new Registry(registryUrl);
        }
        return registry;
    }

    /** A serde of one stream thread's processor, writing with `<output>-value`'s latest schema. */
    AvroWire wire(String output) {
        try {
            return new AvroWire(registry(), output + "-value");
        } catch (IOException e) {
            throw new UncheckedIOException("cannot read the schema of " + output + "-value from the registry", e);
        }
    }
}
