//! What the console asks the brokers, on a blocking thread and never on
//! a worker's path: a group's partitions (committed and end offsets, lag,
//! owner) and members, and the newest records of a dead-letter or late
//! topic. Its clients join no group and commit nothing.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::OwnedMessage,
};
use serde::Serialize;

use crate::kafka::{KafkaConfig, QuietReader, members};

/// How long one broker request may take before the console says so.
const CALL: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    pub partition: i32,
    /// The member that owns it, as the group coordinator says.
    pub owner: Option<String>,
    pub committed: Option<i64>,
    pub end: i64,
    pub lag: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub id: String,
    pub client_id: String,
    pub host: String,
    pub partitions: Vec<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupView {
    pub group: String,
    pub topic: String,
    /// The group's state and protocol as the coordinator reports them.
    pub state: String,
    pub protocol: String,
    pub members: Vec<Member>,
    pub partitions: Vec<PartitionRow>,
    /// Why the members could not be listed (the partitions may still show).
    pub members_error: Option<String>,
}

fn reader(
    kafka: &KafkaConfig,
    group: Option<&str>,
) -> Result<BaseConsumer<QuietReader>, KafkaError> {
    let mut c = kafka.client();
    c.set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    // librdkafka wants a group even to read assigned partitions; this one
    // never joins or commits.
    c.set("group.id", group.unwrap_or("sluice-console"));
    c.create_with_context(QuietReader)
}

fn partitions_of(
    consumer: &BaseConsumer<QuietReader>,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), CALL)?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default())
}

/// What this worker knows of its group without asking the brokers.
pub struct Local<'a> {
    /// This worker's name for the owner column.
    pub name: &'a str,
    /// The source partitions its members own.
    pub owned: &'a [i32],
    /// The group protocol it joined with.
    pub protocol: &'a str,
}

/// `group`'s view of `topic`. Blocking.
pub fn group_view(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    local: &Local<'_>,
) -> Result<GroupView, KafkaError> {
    let consumer = reader(kafka, Some(group))?;
    let partitions = partitions_of(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer.committed_offsets(tpl, CALL)?;
    let (mut state, mut protocol, mut members, mut members_error) =
        (String::new(), String::new(), Vec::new(), None);
    match consumer.fetch_group_list(Some(group), CALL) {
        Ok(list) => {
            if let Some(g) = list.groups().first() {
                state = g.state().to_string();
                protocol = format!("{} / {}", g.protocol_type(), g.protocol());
                members = g
                    .members()
                    .iter()
                    .map(|m| Member {
                        id: m.id().to_string(),
                        client_id: m.client_id().to_string(),
                        host: m.client_host().to_string(),
                        partitions: m
                            .assignment()
                            .map(|a| assigned(a, topic))
                            .unwrap_or_default(),
                    })
                    .collect();
            }
        }
        Err(e) => members_error = Some(e.to_string()),
    }
    if members.is_empty() && members_error.is_none() {
        // Groups of the consumer protocol (KIP-848) are described by
        // ConsumerGroupDescribe, which librdkafka's group list does not send.
        match members::describe_group(&consumer, group, CALL) {
            Ok(described) if !described.is_empty() => {
                protocol = format!("{} (described)", local.protocol);
                members = (described.into_iter())
                    .map(|m| Member {
                        partitions: (m.partitions.iter())
                            .filter(|(t, _)| t == topic)
                            .map(|(_, p)| *p)
                            .collect(),
                        id: m.id,
                        client_id: m.client_id,
                        host: m.host,
                    })
                    .collect();
            }
            Ok(_) if local.owned.is_empty() => {}
            Ok(_) => {
                members_error = Some(format!(
                    "the brokers describe no members (a {} protocol group); this worker's partitions are shown",
                    local.protocol
                ))
            }
            Err(e) => members_error = Some(e.to_string()),
        }
    }
    if protocol.is_empty() || members.is_empty() {
        protocol = format!("{} (this worker's)", local.protocol);
    }
    let mut owners: BTreeMap<i32, String> = members
        .iter()
        .flat_map(|m| m.partitions.iter().map(|p| (*p, m.client_id.clone())))
        .collect();
    for p in local.owned {
        owners.entry(*p).or_insert_with(|| local.name.to_string());
    }
    let mut rows = Vec::new();
    for p in partitions {
        let (_, end) = consumer.fetch_watermarks(topic, p, CALL)?;
        let committed = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        rows.push(PartitionRow {
            partition: p,
            owner: owners.get(&p).cloned(),
            committed,
            end,
            lag: committed.map(|c| (end - c).max(0)),
        });
    }
    Ok(GroupView {
        group: group.to_string(),
        topic: topic.to_string(),
        state,
        protocol,
        members,
        partitions: rows,
        members_error,
    })
}

/// The partitions of `topic` in a classic consumer-protocol assignment
/// (version, then per topic its name and partitions, then user data).
pub fn assigned(bytes: &[u8], topic: &str) -> Vec<i32> {
    fn parse(b: &[u8], topic: &str) -> Option<Vec<i32>> {
        let mut at = 2; // version
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let s = b.get(*at..*at + n)?;
            *at += n;
            Some(s)
        };
        let i32_at = |at: &mut usize| -> Option<i32> {
            take(at, 4).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
        };
        let topics = i32_at(&mut at)?;
        let mut out = Vec::new();
        for _ in 0..topics.max(0) {
            let len = take(&mut at, 2).map(|s| i16::from_be_bytes([s[0], s[1]]))?;
            let name = take(&mut at, len.max(0) as usize)?;
            let n = i32_at(&mut at)?;
            for _ in 0..n.max(0) {
                let p = i32_at(&mut at)?;
                if name == topic.as_bytes() {
                    out.push(p);
                }
            }
        }
        Some(out)
    }
    let mut out = parse(bytes, topic).unwrap_or_default();
    out.sort_unstable();
    out
}

/// The newest `limit` committed records of `topic`, newest first. Blocking.
pub fn newest(
    kafka: &KafkaConfig,
    topic: &str,
    limit: i64,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let consumer = reader(kafka, None)?;
    let mut tpl = TopicPartitionList::new();
    let mut open = std::collections::BTreeSet::new();
    for p in partitions_of(&consumer, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, CALL)?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset((high - limit).max(low)))?;
            open.insert(p);
        }
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + CALL;
    let mut out = Vec::new();
    while !open.is_empty() && std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
    }
    out.sort_by_key(|m| std::cmp::Reverse((m.timestamp().to_millis(), m.offset())));
    out.truncate(limit.max(0) as usize);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 3];
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend(0i32.to_be_bytes()); // no user data
        b
    }

    #[test]
    fn a_classic_assignment_gives_its_partitions_of_the_topic() {
        let b = assignment(&[("other", &[0]), ("logins", &[4, 1])]);
        assert_eq!(assigned(&b, "logins"), vec![1, 4]);
        assert_eq!(assigned(&b, "missing"), Vec::<i32>::new());
    }

    #[test]
    fn a_cut_assignment_gives_nothing_rather_than_a_panic() {
        let b = assignment(&[("logins", &[4, 1])]);
        for n in 0..b.len() {
            assert!(assigned(&b[..n], "logins").len() <= 2);
        }
        assert_eq!(assigned(&[], "logins"), Vec::<i32>::new());
    }
}
