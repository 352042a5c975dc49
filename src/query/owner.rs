//! Which worker holds a partition of a store: the group's assignment as
//! its coordinator describes it, and the address each member advertises in
//! its `client.id`. Asked on a blocking thread, through one client kept
//! for the process; answers are kept a second, so a burst of queries for
//! other workers' keys costs the brokers one description.

use std::{
    collections::BTreeMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::kafka::{
    KafkaConfig, QuietReader,
    members::{self, GroupMember},
};

/// How long a broker call may take before the query says so.
const CALL: Duration = Duration::from_secs(3);
/// How long a group's description and a topic's partition count are reused.
const FRESH: Duration = Duration::from_secs(1);

/// A partition's holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub client_id: String,
    /// Where it answers queries, if it says.
    pub address: Option<String>,
}

type Cache<T> = Mutex<BTreeMap<String, (Instant, T)>>;

pub struct Owners {
    kafka: KafkaConfig,
    client: Mutex<Option<BaseConsumer<QuietReader>>>,
    /// Partition counts by topic; holders by group and topic.
    counts: Cache<i32>,
    held: Cache<BTreeMap<i32, Holder>>,
}

impl Owners {
    pub fn new(kafka: KafkaConfig) -> Owners {
        Owners {
            kafka,
            client: Mutex::new(None),
            counts: Mutex::new(BTreeMap::new()),
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many partitions `topic` has. Blocking.
    pub fn partitions(&self, topic: &str) -> Result<i32, String> {
        if let Some(n) = Self::fresh(&self.counts, topic) {
            return Ok(n);
        }
        let n = self.with_client(|c| {
            let md = c
                .fetch_metadata(Some(topic), CALL)
                .map_err(|e| format!("the partitions of {topic}: {e}"))?;
            md.topics()
                .first()
                .filter(|t| t.error().is_none())
                .map(|t| t.partitions().len() as i32)
                .ok_or_else(|| format!("topic {topic} is not there"))
        })?;
        Self::keep(&self.counts, topic.to_string(), n);
        Ok(n)
    }

    /// Who in `group` holds each partition of `topic`. Blocking.
    pub fn holders(&self, group: &str, topic: &str) -> Result<BTreeMap<i32, Holder>, String> {
        let key = format!("{group}\n{topic}");
        if let Some(h) = Self::fresh(&self.held, &key) {
            return Ok(h);
        }
        let listed = self
            .with_client(|c| members::describe_group(c, group, CALL).map_err(|e| e.to_string()))?;
        let h = holders(&listed, topic);
        Self::keep(&self.held, key, h.clone());
        Ok(h)
    }

    fn with_client<T>(
        &self,
        f: impl FnOnce(&BaseConsumer<QuietReader>) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut client = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if client.is_none() {
            *client = Some(members::describer(&self.kafka).map_err(|e| e.to_string())?);
        }
        match client.as_ref() {
            Some(c) => f(c),
            None => Err("no Kafka client".into()),
        }
    }

    fn fresh<T: Clone>(cache: &Cache<T>, key: &str) -> Option<T> {
        let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        let (at, v) = cache.get(key)?;
        (at.elapsed() < FRESH).then(|| v.clone())
    }

    fn keep<T>(cache: &Cache<T>, key: String, v: T) {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(key, (Instant::now(), v));
    }
}

fn holders(listed: &[GroupMember], topic: &str) -> BTreeMap<i32, Holder> {
    listed
        .iter()
        .flat_map(|m| {
            let holder = Holder {
                client_id: m.client_id.clone(),
                address: members::advertised(&m.client_id).map(str::to_string),
            };
            m.partitions
                .iter()
                .filter(move |(t, _)| t == topic)
                .map(move |(_, p)| (*p, holder.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_are_read_per_partition_of_the_topic_with_their_addresses() {
        let listed = vec![
            GroupMember {
                id: "m-a".into(),
                client_id: "a@10.0.0.1:9464".into(),
                host: "/10.0.0.1".into(),
                partitions: vec![("t".into(), 0), ("other".into(), 1), ("t".into(), 2)],
            },
            GroupMember {
                id: "m-b".into(),
                client_id: "b".into(),
                host: "/10.0.0.2".into(),
                partitions: vec![("t".into(), 1)],
            },
        ];
        let h = holders(&listed, "t");
        assert_eq!(h.len(), 3);
        assert_eq!(h[&0].address.as_deref(), Some("10.0.0.1:9464"));
        assert_eq!(h[&2].client_id, "a@10.0.0.1:9464");
        assert_eq!(h[&1].address, None);
    }
}
