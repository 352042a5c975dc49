package dev.sluice.peer;

import java.nio.charset.StandardCharsets;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;

/** `user-login` → decode, validate, normalise, key by user id → `processed-user-login`; the rest to the DLQ. */
final class UserLoginTopology {
    private UserLoginTopology() {}

    static Topology build(Settings s) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<byte[], Outcome> checked = builder
                .stream(s.input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .process(() -> new Check(s));
        checked.split()
                .branch((k, o) -> o.ok, Branched.withConsumer(ok -> ok.mapValues(o -> o.bytes)
                        .to(s.output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()))))
                .defaultBranch(Branched.withConsumer(bad -> bad.mapValues(o -> o.bytes)
                        .to(s.dlq, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()))));
        return builder.build();
    }

    /** Decodes, validates and normalises one login; a refused one keeps its bytes and gains the reason. */
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
            String userId = login.get("user_id").toString();
            String ip = login.get("ip").toString();
            long timestamp = (Long) login.get("timestamp");
            String deviceType = login.get("device_type").toString();
            long now = System.currentTimeMillis();
            String refusal = LoginRules.refusal(userId, ip, timestamp, deviceType, now / 1000);
            if (refusal != null) {
                context.forward(Outcome.refused(r, "validation", refusal));
                return;
            }
            GenericRecord out = new GenericData.Record(wire.outputSchema());
            String canonicalId = LoginRules.uuid(userId);
            out.put("user_id", canonicalId);
            out.put("app_version", login.get("app_version").toString());
            out.put("ip", Ip.canonical(ip));
            out.put("locale", login.get("locale").toString());
            out.put("device_id", login.get("device_id").toString());
            out.put("timestamp", timestamp);
            out.put("device_type", LoginRules.deviceType(deviceType));
            out.put("processed_timestamp", now);
            context.forward(r.withKey(canonicalId.getBytes(StandardCharsets.UTF_8))
                    .withValue(Outcome.ok(wire.encode(out))));
        }
    }

    /** A record's fate: its output bytes, or its own bytes bound for the DLQ. */
    static final class Outcome {
        final boolean ok;
        final byte[] bytes;

        private Outcome(boolean ok, byte[] bytes) {
            this.ok = ok;
            this.bytes = bytes;
        }

        static Outcome ok(byte[] bytes) {
            return new Outcome(true, bytes);
        }

        static <K> Record<K, Outcome> refused(Record<K, byte[]> r, String reason, String message) {
            Record<K, Outcome> out = r.withValue(new Outcome(false, r.value()));
            out.headers().add("sluice.error.kind", reason.getBytes(StandardCharsets.UTF_8));
            out.headers().add("sluice.error.message", message.getBytes(StandardCharsets.UTF_8));
            return out;
        }
    }
}
