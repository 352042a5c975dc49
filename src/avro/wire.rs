//! The Confluent wire format: magic byte 0, the schema id as a 4-byte
//! big-endian integer, then the Avro binary body.

pub const MAGIC: u8 = 0;
pub const HEADER_LEN: usize = 5;

/// Why bytes are not a Confluent-framed record. Always the producer's fault;
/// the same bytes will never decode, so they belong in the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty payload (a tombstone or a null value)")]
    Empty,
    #[error("payload of {0} bytes is shorter than the 5-byte Confluent header")]
    Truncated(usize),
    #[error("first byte is {0:#04x}, not the Confluent magic byte 0x00")]
    BadMagic(u8),
}

/// Splits a framed record into its schema id and Avro body.
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), WireError> {
    match bytes {
        [] => Err(WireError::Empty),
        [m, ..] if *m != MAGIC => Err(WireError::BadMagic(*m)),
        b if b.len() < HEADER_LEN => Err(WireError::Truncated(b.len())),
        [_, a, b, c, d, body @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), body)),
        _ => unreachable!("lengths below the header are handled above"),
    }
}

/// Writes the header for `id` to `out`; the Avro body goes after it.
pub fn write_header(out: &mut Vec<u8>, id: u32) {
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_errors() {
        let mut buf = Vec::new();
        write_header(&mut buf, 0x0102_0304);
        buf.extend_from_slice(b"body");
        assert_eq!(split(&buf), Ok((0x0102_0304, &b"body"[..])));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
        assert_eq!(split(&[]), Err(WireError::Empty));
        assert_eq!(split(&[0, 1, 2]), Err(WireError::Truncated(3)));
        assert_eq!(
            split(&[0x7b, 1, 2, 3, 4, 5]),
            Err(WireError::BadMagic(0x7b))
        );
    }
}
