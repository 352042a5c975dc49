//! Reads partitions as raw record batches with the kafka-protocol crate and
//! keeps only what committed transactions wrote, by their control markers.
//! Neither the mock cluster nor tansu hides aborted records from a
//! read_committed consumer, so exactly-once is checked here instead.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
        fetch_request::{FetchPartition, FetchTopic},
    },
    protocol::{Decodable, Encodable, HeaderVersion, StrBytes},
    records::{Record, RecordBatchDecoder},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const FETCH_VERSION: i16 = 11;

pub struct RawReader {
    stream: TcpStream,
    correlation: i32,
}

impl RawReader {
    pub async fn connect(addr: &str) -> RawReader {
        RawReader {
            stream: TcpStream::connect(addr).await.expect("broker reachable"),
            correlation: 0,
        }
    }

    async fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (i16, i64, Option<Bytes>) {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(FETCH_VERSION)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-raw-reader")));
        let request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_isolation_level(0) // everything, aborted data and markers included
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![
                        FetchPartition::default()
                            .with_partition(partition)
                            .with_fetch_offset(offset)
                            .with_partition_max_bytes(8 << 20),
                    ]),
            ]);
        let mut body = BytesMut::new();
        header
            .encode(&mut body, FetchRequest::header_version(FETCH_VERSION))
            .unwrap();
        request.encode(&mut body, FETCH_VERSION).unwrap();
        let mut framed = BytesMut::with_capacity(body.len() + 4);
        framed.put_i32(body.len() as i32);
        framed.extend_from_slice(&body);
        self.stream.write_all(&framed).await.unwrap();
        let len = self.stream.read_i32().await.unwrap() as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await.unwrap();
        let mut buf = Bytes::from(buf);
        let rh =
            ResponseHeader::decode(&mut buf, FetchResponse::header_version(FETCH_VERSION)).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        let resp = FetchResponse::decode(&mut buf, FETCH_VERSION).unwrap();
        let p = resp
            .responses
            .into_iter()
            .next()
            .unwrap()
            .partitions
            .into_iter()
            .next()
            .unwrap();
        (p.error_code, p.high_watermark, p.records)
    }

    /// Every record of a partition, control records included, in offset order.
    pub async fn read_partition(&mut self, topic: &str, partition: i32) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        let mut offset = 0;
        let mut empty = 0;
        while empty < 3 {
            let (error, _hw, records) = self.fetch(topic, partition, offset).await;
            assert_eq!(
                error, 0,
                "fetch {topic}[{partition}] at {offset}: error {error}"
            );
            let mut got = false;
            if let Some(mut bytes) = records {
                while bytes.has_remaining() {
                    let Ok(set) = RecordBatchDecoder::decode(&mut bytes) else {
                        break;
                    };
                    for r in set.records {
                        if r.offset >= offset {
                            offset = r.offset + 1;
                            got = true;
                            out.push(r);
                        }
                    }
                }
            }
            empty = if got { 0 } else { empty + 1 };
        }
        out
    }
}

/// Records of committed transactions and non-transactional writes; aborted
/// and still-open transactions are dropped. Returns (kept, aborted count).
pub fn committed(records: Vec<Record>) -> (Vec<Record>, usize) {
    let mut pending: HashMap<i64, Vec<Record>> = HashMap::new();
    let mut kept = Vec::new();
    let mut aborted = 0;
    for r in records {
        if r.control {
            let mut key = r.key.clone().unwrap_or_default();
            let _version = key.get_i16();
            let kind = key.get_i16();
            let batch = pending.remove(&r.producer_id).unwrap_or_default();
            match kind {
                1 => kept.extend(batch),
                0 => aborted += batch.len(),
                other => panic!("unknown control record type {other}"),
            }
        } else if r.transactional {
            pending.entry(r.producer_id).or_default().push(r);
        } else {
            kept.push(r);
        }
    }
    (kept, aborted)
}
