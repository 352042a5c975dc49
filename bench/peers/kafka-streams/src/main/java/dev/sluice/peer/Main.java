package dev.sluice.peer;

import java.time.Duration;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.Topology;

/**
 * Runs one topology until SIGTERM. Prints `RUNNING` on stdout once every
 * stream thread has its tasks, so a benchmark knows when it has joined.
 */
public final class Main {
    private Main() {}

    public static void main(String[] args) throws InterruptedException {
        Settings s;
        try {
            s = Settings.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println("kafka-streams peer: " + e.getMessage());
            System.err.println(Settings.USAGE);
            System.exit(2);
            return;
        }
        Topology topology = switch (s.topology) {
            case "user-login" -> UserLoginTopology.build(s);
            case "iot-enriched" -> IotEnrichedTopology.build(s);
            case "login-counts" -> LoginCountsTopology.build(s);
            default -> IotWindowsTopology.build(s);
        };
        KafkaStreams streams = new KafkaStreams(topology, s.streams);
        CountDownLatch stopped = new CountDownLatch(1);
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.RUNNING) {
                System.out.println("RUNNING");
                System.out.flush();
            }
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            stopped.countDown();
        }));
        streams.start();
        stopped.await();
        if (streams.state() == KafkaStreams.State.ERROR) {
            System.exit(1);
        }
    }
}
