package dev.sluice.peer;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.avro.Schema;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;

/**
 * Avro in the Confluent wire format: a zero magic byte, the schema id (4
 * bytes, big-endian), then the Avro binary body. One per stream thread:
 * decoders and buffers are reused, as Confluent's serdes do.
 */
final class AvroWire {
    /** Why bytes did not decode, named as sluice's dead-letter reasons are. */
    static final class Undecodable extends Exception {
        final String reason;

        Undecodable(String reason, String message) {
            super(message);
            this.reason = reason;
        }
    }

    private final Registry registry;
    private final Map<Integer, GenericDatumReader<GenericRecord>> readers = new ConcurrentHashMap<>();
    private final int writerId;
    private final GenericDatumWriter<GenericRecord> writer;
    private final Schema writerSchema;
    private BinaryDecoder decoder;
    private BinaryEncoder encoder;
    private final ByteArrayOutputStream buffer = new ByteArrayOutputStream(256);

    /** Writes with the schema registered last under `outputSubject`. */
    AvroWire(Registry registry, String outputSubject) throws IOException {
        this.registry = registry;
        Map.Entry<Integer, Schema> latest = registry.latest(outputSubject);
        this.writerId = latest.getKey();
        this.writerSchema = latest.getValue();
        this.writer = new GenericDatumWriter<>(writerSchema);
    }

    Schema outputSchema() {
        return writerSchema;
    }

    GenericRecord decode(byte[] bytes) throws Undecodable {
        if (bytes == null || bytes.length == 0) {
            throw new Undecodable("empty_payload", "no value");
        }
        if (bytes.length < 5) {
            throw new Undecodable("truncated_header", "fewer than 5 bytes: no Confluent header");
        }
        if (bytes[0] != 0) {
            throw new Undecodable("bad_magic_byte", "magic byte " + bytes[0] + ", not 0");
        }
        int id = ((bytes[1] & 0xff) << 24) | ((bytes[2] & 0xff) << 16) | ((bytes[3] & 0xff) << 8) | (bytes[4] & 0xff);
        GenericDatumReader<GenericRecord> reader = readers.get(id);
        if (reader == null) {
            try {
                reader = new GenericDatumReader<>(registry.schema(id));
            } catch (IOException e) {
                throw new Undecodable("unknown_schema_id", "schema id " + id + ": " + e.getMessage());
            }
            readers.put(id, reader);
        }
        decoder = DecoderFactory.get().binaryDecoder(bytes, 5, bytes.length - 5, decoder);
        try {
            return reader.read(null, decoder);
        } catch (IOException | RuntimeException e) {
            throw new Undecodable("corrupt_avro", "not Avro of schema " + id + ": " + e);
        }
    }

    byte[] encode(GenericRecord record) {
        buffer.reset();
        buffer.write(0);
        buffer.write(writerId >>> 24);
        buffer.write(writerId >>> 16);
        buffer.write(writerId >>> 8);
        buffer.write(writerId);
        encoder = EncoderFactory.get().directBinaryEncoder(buffer, encoder);
        try {
            writer.write(record, encoder);
            encoder.flush();
        } catch (IOException e) {
            throw new IllegalStateException("cannot encode " + record, e);
        }
        return buffer.toByteArray();
    }
}
