package dev.sluice.peer;

import java.nio.charset.StandardCharsets;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;

import dev.sluice.peer.UserLoginTopology.Outcome;

/**
 * `user-login` → the user-login checks → valid logins re-keyed by locale
 * (`groupBy`, through the repartition topic `<application id>-locale-repartition`)
 * and counted in a changelogged store → every count's update as `LoginCount`,
 * keyed by the locale; refused logins to the DLQ. The store's cache is off,
 * so every update comes out, as sluice's `logins-by-locale` sends them.
 */
final class LoginCountsTopology {
    private LoginCountsTopology() {}

    static Topology build(Settings s) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<byte[], Outcome> checked = builder
                .stream(s.input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(() -> new Check(s));
        checked.split()
                .branch((k, o) -> o.ok, Branched.withConsumer(ok -> ok
                        .selectKey((locale, o) -> new String(locale, StandardCharsets.UTF_8))
                        .mapValues(o -> o.bytes)
                        .groupByKey(Grouped.with("locale", Serdes.String(), Serdes.ByteArray()))
                        .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("login-counts")
                                .withKeySerde(Serdes.String())
                                .withValueSerde(Serdes.Long())
                                .withCachingDisabled())
                        .toStream()
                        .process(() -> new Encode(s))
                        .to(s.output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()))))
                .defaultBranch(Branched.withConsumer(bad -> bad.mapValues(o -> o.bytes)
                        .to(s.dlq, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()))));
        return builder.build();
    }

    /** Decodes and validates one login: a valid one keyed by its locale, with its own bytes. */
    static final class Check implements Processor<byte[], byte[], byte[], Outcome> {
        private final Settings settings;
        private ProcessorContext<byte[], Outcome> context;
        private AvroWire wire;

        Check(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(ProcessorContext<byte[], Outcome> context) {
            this.context = context;
            this.wire = settings.wire(settings.output);
        }

        @Override
        public void process(Record<byte[], byte[]> r) {
            GenericRecord login;
            try {
                login = wire.decode(r.value());
            } catch (AvroWire.Undecodable e) {
                context.forward(Outcome.refused(r, e.reason, e.getMessage()));
                return;
            }
            String refusal = LoginRules.refusal(
                    login.get("user_id").toString(),
                    login.get("ip").toString(),
                    (Long) login.get("timestamp"),
                    login.get("device_type").toString(),
                    System.currentTimeMillis() / 1000);
            if (refusal != null) {
                context.forward(Outcome.refused(r, "validation", refusal));
                return;
            }
            byte[] locale = login.get("locale").toString().getBytes(StandardCharsets.UTF_8);
            context.forward(r.withKey(locale).withValue(Outcome.ok(r.value())));
        }
    }

    /** A locale's count as `LoginCount`, keyed by the locale. */
    static final class Encode implements Processor<String, Long, byte[], byte[]> {
        private final Settings settings;
        private ProcessorContext<byte[], byte[]> context;
        private AvroWire wire;

        Encode(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(ProcessorContext<byte[], byte[]> context) {
            this.context = context;
            this.wire = settings.wire(settings.output);
        }

        @Override
        public void process(Record<String, Long> r) {
            GenericRecord out = new GenericData.Record(wire.outputSchema());
            out.put("locale", r.key());
            out.put("count", r.value());
            context.forward(r.withKey(r.key().getBytes(StandardCharsets.UTF_8)).withValue(wire.encode(out)));
        }
    }
}
