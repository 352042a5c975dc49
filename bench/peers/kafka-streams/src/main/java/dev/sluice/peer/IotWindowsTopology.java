package dev.sluice.peer;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;

import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.kstream.Branched;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;
import org.apache.kafka.streams.state.WindowStore;

/**
 * `iot_sensor_data` (keyed by device) → 1-minute tumbling event-time windows,
 * 10 s grace → count/sum/min/max/avg per device and sensor type, each window
 * once when it closes (suppress until the window closes) → a topic of
 * `SensorWindowAggregate`, keyed by device.
 *
 * The windows are grouped by the input key, the device, with one entry per
 * sensor type in each device's window: grouping by (device, sensor type)
 * would make Kafka Streams send every reading through a repartition topic,
 * which sluice does not do (readings are already partitioned by device).
 */
final class IotWindowsTopology {
    private IotWindowsTopology() {}

    static Topology build(Settings s) {
        StreamsBuilder builder = new StreamsBuilder();
        KStream<String, Reading> checked = builder
                .stream(s.input, Consumed.with(Serdes.String(), Serdes.ByteArray()))
                .processValues(() -> new Check(s));
        checked.split()
                .branch((k, r) -> r.refused != null, Branched.withConsumer(bad -> bad
                        .mapValues(r -> r.refused)
                        .to(s.dlq, Produced.with(Serdes.String(), Serdes.ByteArray()))))
                .defaultBranch(Branched.withConsumer(ok -> ok
                        .groupByKey(Grouped.with(Serdes.String(), new Reading.Unused()))
                        .windowedBy(TimeWindows.ofSizeAndGrace(s.windowSize, s.windowGrace))
                        .aggregate(DeviceWindow::new, (device, r, w) -> w.add(r),
                                Materialized.<String, DeviceWindow, WindowStore<Bytes, byte[]>>as("device-windows")
                                        .withKeySerde(Serdes.String())
                                        .withValueSerde(new DeviceWindow.Codec()))
                        .suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()))
                        .toStream()
                        .processValues(() -> new Finals(s))
                        .flatMap((w, records) -> records)
                        .to(s.output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()))));
        return builder.build();
    }

    /** One reading, or the bytes of one that is refused (reason in its headers). */
    static final class Reading {
        String sensorType;
        double value;
        byte[] refused;

        /** Readings never leave the task (no repartition), so they are never serialised. */
        static final class Unused implements Serde<Reading> {
            @Override
            public Serializer<Reading> serializer() {
                return (topic, r) -> {
                    throw new IllegalStateException("readings are not repartitioned");
                };
            }

            @Override
            public Deserializer<Reading> deserializer() {
                return (topic, b) -> {
                    throw new IllegalStateException("readings are not repartitioned");
                };
            }
        }
    }

    /** Decodes and checks a reading; its event time becomes the record's timestamp. */
    static final class Check implements FixedKeyProcessor<String, byte[], Reading> {
        private final Settings settings;
        private FixedKeyProcessorContext<String, Reading> context;
        private AvroWire wire;

        Check(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(FixedKeyProcessorContext<String, Reading> context) {
            this.context = context;
            this.wire = settings.wire(settings.output);
        }

        @Override
        public void process(FixedKeyRecord<String, byte[]> r) {
            Reading reading = new Reading();
            GenericRecord g;
            try {
                g = wire.decode(r.value());
            } catch (AvroWire.Undecodable e) {
                refuse(r, reading, e.reason, e.getMessage());
                return;
            }
            reading.value = (Double) g.get("value");
            reading.sensorType = g.get("sensor_type").toString();
            if (!Double.isFinite(reading.value)) {
                refuse(r, reading, "validation", "value " + reading.value + " is not a finite number");
                return;
            }
            if (g.get("device_id").toString().strip().isEmpty()) {
                refuse(r, reading, "validation", "device_id is empty");
                return;
            }
            context.forward(r.withValue(reading).withTimestamp((Long) g.get("timestamp")));
        }

        private void refuse(FixedKeyRecord<String, byte[]> r, Reading reading, String reason, String message) {
            reading.refused = r.value();
            FixedKeyRecord<String, Reading> out = r.withValue(reading);
            out.headers().add("sluice.error.kind", reason.getBytes(StandardCharsets.UTF_8));
            out.headers().add("sluice.error.message", message.getBytes(StandardCharsets.UTF_8));
            context.forward(out);
        }
    }

    /** One device's window: count, sum, min and max per sensor type. */
    static final class DeviceWindow {
        final TreeMap<String, double[]> bySensor = new TreeMap<>();

        DeviceWindow add(Reading r) {
            double[] s = bySensor.get(r.sensorType);
            if (s == null) {
                bySensor.put(r.sensorType, new double[] {1, r.value, r.value, r.value});
            } else {
                s[0] += 1;
                s[1] += r.value;
                s[2] = Math.min(s[2], r.value);
                s[3] = Math.max(s[3], r.value);
            }
            return this;
        }

        /** The state store's bytes: per sensor type, its name and four doubles. */
        static final class Codec implements Serde<DeviceWindow> {
            @Override
            public Serializer<DeviceWindow> serializer() {
                return (topic, w) -> {
                    int size = 4;
                    for (String k : w.bySensor.keySet()) {
                        size += 4 + k.length() * 3 + 32;
                    }
                    ByteBuffer b = ByteBuffer.allocate(size);
                    b.putInt(w.bySensor.size());
                    for (Map.Entry<String, double[]> e : w.bySensor.entrySet()) {
                        byte[] name = e.getKey().getBytes(StandardCharsets.UTF_8);
                        b.putInt(name.length).put(name);
                        for (double d : e.getValue()) {
                            b.putDouble(d);
                        }
                    }
                    return java.util.Arrays.copyOf(b.array(), b.position());
                };
            }

            @Override
            public Deserializer<DeviceWindow> deserializer() {
                return (topic, bytes) -> {
                    DeviceWindow w = new DeviceWindow();
                    if (bytes == null) {
                        return w;
                    }
                    ByteBuffer b = ByteBuffer.wrap(bytes);
                    int n = b.getInt();
                    for (int i = 0; i < n; i++) {
                        byte[] name = new byte[b.getInt()];
                        b.get(name);
                        w.bySensor.put(new String(name, StandardCharsets.UTF_8),
                                new double[] {b.getDouble(), b.getDouble(), b.getDouble(), b.getDouble()});
                    }
                    return w;
                };
            }
        }
    }

    /** A closed device window as one `SensorWindowAggregate` record per sensor type, keyed by device. */
    static final class Finals implements FixedKeyProcessor<Windowed<String>, DeviceWindow, List<KeyValue<byte[], byte[]>>> {
        private final Settings settings;
        private FixedKeyProcessorContext<Windowed<String>, List<KeyValue<byte[], byte[]>>> context;
        private AvroWire wire;

        Finals(Settings settings) {
            this.settings = settings;
        }

        @Override
        public void init(FixedKeyProcessorContext<Windowed<String>, List<KeyValue<byte[], byte[]>>> context) {
            this.context = context;
            this.wire = settings.wire(settings.output);
        }

        @Override
        public void process(FixedKeyRecord<Windowed<String>, DeviceWindow> r) {
            String device = r.key().key();
            byte[] key = device.getBytes(StandardCharsets.UTF_8);
            List<KeyValue<byte[], byte[]>> out = new ArrayList<>(r.value().bySensor.size());
            for (Map.Entry<String, double[]> e : r.value().bySensor.entrySet()) {
                double[] s = e.getValue();
                GenericRecord g = new GenericData.Record(wire.outputSchema());
                g.put("device_id", device);
                g.put("sensor_type", e.getKey());
                g.put("window_start", r.key().window().start());
                g.put("window_end", r.key().window().end());
                g.put("count", (long) s[0]);
                g.put("sum", s[1]);
                g.put("min", s[2]);
                g.put("max", s[3]);
                g.put("avg", s[1] / s[0]);
                out.add(KeyValue.pair(key, wire.encode(g)));
            }
            context.forward(r.withValue(out));
        }
    }
}
