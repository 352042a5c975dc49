//! Reads partitions as raw record batches with the kafka-protocol crate,
//! aborted data and transaction markers included, and sorts the records by
//! those markers. On Apache Kafka this is the second witness beside a plain
//! read_committed consumer (it must see the aborted batches that consumer
//! never shows); on the mock cluster, which hides nothing from
//! read_committed readers, it is the only one.

use std::collections::{BTreeMap, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::{
    messages::{
        ApiKey, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse,
        RequestHeader, ResponseHeader, TopicName,
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
const FIND_COORDINATOR_VERSION: i16 = 3;

/// One connection per broker, found through the cluster's metadata.
pub struct RawReader {
    bootstrap: String,
    connections: HashMap<String, TcpStream>,
    correlation: i32,
}

impl RawReader {
    pub async fn connect(bootstrap: &str) -> RawReader {
        RawReader {
            bootstrap: bootstrap.to_string(),
            connections: HashMap::new(),
            correlation: 0,
        }
    }

    async fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        addr: &str,
        key: ApiKey,
        version: i16,
        request: Req,
    ) -> Resp {
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-raw-reader")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        let mut framed = BytesMut::with_capacity(body.len() + 4);
        framed.put_i32(body.len() as i32);
        framed.extend_from_slice(&body);
        if !self.connections.contains_key(addr) {
            let stream = TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("broker {addr} unreachable: {e}"));
            self.connections.insert(addr.to_string(), stream);
        }
        let stream = self.connections.get_mut(addr).unwrap();
        stream.write_all(&framed).await.unwrap();
        let len = stream.read_i32().await.unwrap() as usize;
        let mut buf = vec![0u8; len];
        stream.read_exact(&mut buf).await.unwrap();
        let mut buf = Bytes::from(buf);
        let rh = ResponseHeader::decode(&mut buf, Resp::header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, self.correlation);
        Resp::decode(&mut buf, version).unwrap()
    }

    /// The address of the broker leading `topic[partition]`.
    fn leader(&self, topic: &str, partition: i32) -> String {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let meta = sluice::kafka::blocking(|| {
            consumer.fetch_metadata(Some(topic), std::time::Duration::from_secs(10))
        })
        .unwrap_or_else(|e| panic!("metadata of {topic}: {e}"));
        let leader = meta.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .unwrap_or_else(|| panic!("{topic} has no partition {partition}"))
            .leader();
        let broker = meta
            .brokers()
            .iter()
            .find(|b| b.id() == leader)
            .unwrap_or_else(|| panic!("{topic}[{partition}]: no leader ({leader})"));
        format!("{}:{}", broker.host(), broker.port())
    }

    async fn fetch(
        &mut self,
        addr: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> (i16, Option<Bytes>) {
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
        let resp: FetchResponse = self.call(addr, ApiKey::Fetch, FETCH_VERSION, request).await;
        let p = resp
            .responses
            .into_iter()
            .next()
            .unwrap()
            .partitions
            .into_iter()
            .next()
            .unwrap();
        (p.error_code, p.records)
    }

    /// Every record of a partition, control records included, in offset
    /// order. Panics on a batch it cannot decode: a witness that skips what
    /// it does not understand proves nothing.
    pub async fn read_partition(&mut self, topic: &str, partition: i32) -> Vec<Record> {
        let addr = self.leader(topic, partition);
        let mut out: Vec<Record> = Vec::new();
        let mut offset = 0;
        let mut empty = 0;
        while empty < 3 {
            let (error, records) = self.fetch(&addr, topic, partition, offset).await;
            assert_eq!(
                error, 0,
                "fetch {topic}[{partition}] at {offset} from {addr}: error {error}"
            );
            let mut got = false;
            if let Some(mut bytes) = records {
                while complete_batch(&bytes) {
                    let set = RecordBatchDecoder::decode(&mut bytes).unwrap_or_else(|e| {
                        panic!("{topic}[{partition}] near offset {offset}: undecodable batch: {e}")
                    });
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

    /// Every partition of `topic`, sorted by transaction outcome.
    pub async fn read_topic(&mut self, topic: &str, partitions: i32) -> Sorted {
        let mut all = Sorted::default();
        for p in 0..partitions {
            let s = sort(self.read_partition(topic, p).await);
            all.kept.extend(s.kept);
            all.aborted += s.aborted;
            all.aborted_transactions += s.aborted_transactions;
            all.open
                .extend(s.open.into_iter().map(|(pid, n)| ((p, pid), n)));
        }
        all
    }

    /// The broker (host:port) coordinating a transactional id.
    pub async fn transaction_coordinator(&mut self, transactional_id: &str) -> String {
        let first = self.bootstrap.split(',').next().unwrap().to_string();
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(transactional_id.to_string()))
            .with_key_type(1);
        let resp: FindCoordinatorResponse = self
            .call(
                &first,
                ApiKey::FindCoordinator,
                FIND_COORDINATOR_VERSION,
                request,
            )
            .await;
        assert_eq!(
            resp.error_code, 0,
            "FindCoordinator({transactional_id}): error {}",
            resp.error_code
        );
        format!("{}:{}", resp.host, resp.port)
    }
}

/// Whether `bytes` starts with a whole batch; a fetch response may end
/// with a partial one (cut at the size limit), which the next fetch
/// returns whole.
fn complete_batch(bytes: &Bytes) -> bool {
    // base offset (8), batch length (4), then that many bytes.
    if bytes.remaining() < 12 {
        return false;
    }
    let len = i32::from_be_bytes(bytes[8..12].try_into().unwrap());
    len >= 0 && bytes.remaining() >= 12 + len as usize
}

/// A partition's records by how their transactions ended.
#[derive(Debug, Default)]
pub struct Sorted {
    /// Non-transactional records and those of committed transactions.
    pub kept: Vec<Record>,
    /// Records of aborted transactions, and how many transactions.
    pub aborted: usize,
    pub aborted_transactions: usize,
    /// Records of transactions with no marker yet, by (partition, producer id).
    pub open: BTreeMap<(i32, i64), usize>,
}

/// Sorts one partition's records by their control markers.
pub fn sort(records: Vec<Record>) -> SortedPartition {
    let mut pending: HashMap<i64, Vec<Record>> = HashMap::new();
    let mut s = SortedPartition::default();
    for r in records {
        if r.control {
            let mut key = r.key.clone().unwrap_or_default();
            let _version = key.get_i16();
            let kind = key.get_i16();
            let batch = pending.remove(&r.producer_id).unwrap_or_default();
            match kind {
                1 => s.kept.extend(batch),
                0 => {
                    s.aborted += batch.len();
                    s.aborted_transactions += 1;
                }
                other => panic!("unknown control record type {other}"),
            }
        } else if r.transactional {
            pending.entry(r.producer_id).or_default().push(r);
        } else {
            s.kept.push(r);
        }
    }
    s.open = pending
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(pid, v)| (pid, v.len()))
        .collect();
    s
}

#[derive(Debug, Default)]
pub struct SortedPartition {
    pub kept: Vec<Record>,
    pub aborted: usize,
    pub aborted_transactions: usize,
    pub open: BTreeMap<i64, usize>,
}

/// Records of committed transactions and non-transactional writes, for
/// callers that expect no open transaction (it panics on one).
pub fn committed(records: Vec<Record>) -> (Vec<Record>, usize) {
    let s = sort(records);
    assert!(
        s.open.is_empty(),
        "transactions left open (producer id → records): {:?}",
        s.open
    );
    (s.kept, s.aborted)
}

/// A header's value as text.
pub fn header(r: &Record, key: &str) -> Option<String> {
    r.headers
        .get(&StrBytes::from_string(key.to_string()))
        .and_then(|v| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
