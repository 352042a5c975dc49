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
import org.apache.kafka.streams.kstream.GlobalKTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * `iot_sensor_data` (keyed by device) left-joined with a GlobalKTable of
 * `DeviceInfo` (keyed by device id) → `EnrichedReading`s (every reading
 * field plus the device's `site`, null for an unknown device), keyed by
 * device. Invalid readings (a value that is not finite, no device) go to
 * the dead-letter topic as sluice sends them. The table keeps each row as
 * its topic has it and decodes it on lookup, as sluice's does.
 */
final class IotEnrichedTopology {
    private IotEnrichedTopology() {}

    static Topology build(Settings s) {
        if (s.table == null) {
            throw new IllegalArgumentException("iot-enriched needs --table TOPIC");
        }
        StreamsBuilder builder = new StreamsBuilder();
        GlobalKTable<String, byte[]> devices = builder.globalTable(s.table,
                Consumed.with(Serdes.String(), Serdes.ByteArray()),
                Materialized.<String, byte[], KeyValueStore<Bytes, byte[]>>as("devices")
                        .withKeySerde(Serdes.String())
                        .withValueSerde(Serdes.ByteArray()));
        // The joiner runs on every stream thread; a wire's buffers are one thread's.
        ThreadLocal<AvroWire> wires = ThreadLocal.withInitial(() -> s.wire(s.output));
        builder.stream(s.input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .processValues(() -> new Check(s))
                .split()
                .branch((k, c) -> c.refused != null, Branched.withConsumer(bad -> bad
                        .mapValues(c -> c.refused)
                        .to(s.dlq, Produced.with(Serdes.String(), Serdes.ByteArray()))))
                .defaultBranch(Branched.withConsumer(ok -> ok
                        .leftJoin(devices, (k, c) -> c.deviceId, (c, row) -> enrich(wires.get(), c, row))
                        .to(s.output, Produced.with(Serdes.String(), Serdes.ByteArray()))));
        return builder.build();
    }

    static byte[] enrich(AvroWire wire, Checked c, byte[] row) {
        Object site = null;
        if (row != null) {
            try {
                site = wire.decode(row).get("site").toString();
            } catch (AvroWire.Undecodable e) {
                throw new IllegalStateException("a device row does not decode: " + e.getMessage(), e);
            }
        }
        GenericRecord out = new GenericData.Record(wire.outputSchema());
        GenericRecord r = c.reading;
        out.put("device_id", c.deviceId);
        out.put("sensor_type", new GenericData.EnumSymbol(
                wire.outputSchema().getField("sensor_type").schema(), r.get("sensor_type").toString()));
        out.put("value", r.get("value"));
        out.put("unit", r.get("unit").toString());
        out.put("timestamp", r.get("timestamp"));
        out.put("site", site);
        return wire.encode(out);
    }

    /** A decoded reading, or the bytes of one that is refused (reason in its headers). */
    static final class Checked {
        GenericRecord reading;
        String deviceId;
        byte[] refused;
    }

    /** Decodes and checks a reading; its event time becomes the record's timestamp. */
    static final class Check implements FixedKeyProcessor<String, byte[], Checked> {
        private final Settings settings;
        private FixedKeyProcessorContext<String, Checked> context;
        private AvroWire wire;

        Check(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(FixedKeyProcessorContext<String, Checked> context) {
            this.context = context;
            this.wire = settings.wire(settings.output);
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> r) {
            Checked c = new Checked();
            try {
                c.reading = wire.decode(r.value());
            } catch (AvroWire.Undecodable e) {
                refuse(r, c, e.reason, e.getMessage());
                return;
            }
            double value = (Double) c.reading.get("value");
            c.deviceId = c.reading.get("device_id").toString();
            if (!Double.isFinite(value)) {
                refuse(r, c, "validation", "value " + value + " is not a finite number");
                return;
            }
            if (c.deviceId.strip().isEmpty()) {
                refuse(r, c, "validation", "device_id is empty");
                return;
            }
            context.forward(r.withValue(c).withTimestamp((Long) c.reading.get("timestamp")));
        }

        private void refuse(FixedKeyRecord<String, byte[]> r, Checked c, String reason, String message) {
            c.refused = r.value();
            FixedKeyRecord<String, Checked> out = r.withValue(c);
            out.headers().add("sluice.error.kind", reason.getBytes(StandardCharsets.UTF_8));
            out.headers().add("sluice.error.message", message.getBytes(StandardCharsets.UTF_8));
            context.forward(out);
        }
    }
}
