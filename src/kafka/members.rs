//! Who is in a consumer group and which partitions each member holds, as
//! the group's coordinator says: librdkafka's DescribeConsumerGroups,
//! which asks with ConsumerGroupDescribe for groups of the consumer
//! protocol (KIP-848) and DescribeGroups for classic ones. The rdkafka
//! crate does not wrap this call, so this module does, over the C API it
//! links; nothing else in the engine calls C. Blocking.

use std::{
    ffi::{CStr, CString, c_char},
    ptr,
    time::Duration,
};

use rdkafka::{
    bindings as rd,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use super::{KafkaConfig, QuietReader};

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The id the coordinator gave it.
    pub id: String,
    pub client_id: String,
    /// The address the broker saw it connect from.
    pub host: String,
    /// Its assigned partitions: (topic, partition).
    pub partitions: Vec<(String, i32)>,
}

/// Why a group could not be described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("cannot make a Kafka client: {0}")]
    Client(#[from] KafkaError),
    /// The brokers answered with an error (or none in time); a retry may help.
    #[error("describing group {group}: {reason}")]
    Brokers { group: String, reason: String },
}

/// A client to describe groups with (it joins no group).
pub fn describer(kafka: &KafkaConfig) -> Result<BaseConsumer<QuietReader>, KafkaError> {
    kafka.client().create_with_context(QuietReader)
}

/// The members of `group` and their assignments. Blocking, at most about
/// `timeout`.
pub fn describe_group(
    consumer: &BaseConsumer<QuietReader>,
    group: &str,
    timeout: Duration,
) -> Result<Vec<GroupMember>, DescribeError> {
    let fail = |reason: String| DescribeError::Brokers {
        group: group.to_string(),
        reason,
    };
    let name = CString::new(group).map_err(|_| fail("the group id holds a NUL byte".into()))?;
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = consumer.client().native_ptr();
    // SAFETY: every pointer below comes from librdkafka for this client,
    // lives until the matching destroy call at the end of this block, and
    // the result's strings and lists are read (copied) before the event
    // that owns them is destroyed.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        );
        rd::rd_kafka_AdminOptions_set_request_timeout(options, ms, ptr::null_mut(), 0);
        let mut groups = [name.as_ptr()];
        rd::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options, queue);
        let event = rd::rd_kafka_queue_poll(queue, ms.saturating_add(1_000));
        let out = if event.is_null() {
            Err(fail(format!("no answer within {timeout:?}")))
        } else {
            let read = read_result(event).map_err(fail);
            rd::rd_kafka_event_destroy(event);
            read
        };
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        out
    }
}

/// # Safety
/// `event` is a live DescribeConsumerGroups result event.
unsafe fn read_result(event: *mut rd::rd_kafka_event_t) -> Result<Vec<GroupMember>, String> {
    unsafe {
        if rd::rd_kafka_event_error(event) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(text(rd::rd_kafka_event_error_string(event)));
        }
        let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
        if result.is_null() {
            return Err("an answer of another kind".into());
        }
        let mut count = 0usize;
        let groups = rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
        let Some(&g) = (count > 0).then(|| &*groups) else {
            return Ok(Vec::new());
        };
        let error = rd::rd_kafka_ConsumerGroupDescription_error(g);
        if !error.is_null() {
            return Err(text(rd::rd_kafka_error_string(error)));
        }
        let mut members = Vec::new();
        for i in 0..rd::rd_kafka_ConsumerGroupDescription_member_count(g) {
            let m = rd::rd_kafka_ConsumerGroupDescription_member(g, i);
            let mut partitions = Vec::new();
            let assignment = rd::rd_kafka_MemberDescription_assignment(m);
            let list = if assignment.is_null() {
                ptr::null()
            } else {
                rd::rd_kafka_MemberAssignment_partitions(assignment)
            };
            if !list.is_null() && (*list).cnt > 0 {
                let elems = std::slice::from_raw_parts((*list).elems, (*list).cnt as usize);
                partitions.extend(elems.iter().map(|e| (text(e.topic), e.partition)));
            }
            members.push(GroupMember {
                id: text(rd::rd_kafka_MemberDescription_consumer_id(m)),
                client_id: text(rd::rd_kafka_MemberDescription_client_id(m)),
                host: text(rd::rd_kafka_MemberDescription_host(m)),
                partitions,
            });
        }
        Ok(members)
    }
}

/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn text(s: *const c_char) -> String {
    if s.is_null() {
        return String::new();
    }
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// The address a member advertises for queries in its `client.id`
/// (`<name>@<host:port>`, see `RunOptions::advertised`).
pub fn advertised(client_id: &str) -> Option<&str> {
    client_id
        .rsplit_once('@')
        .map(|(_, addr)| addr)
        .filter(|a| !a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_advertises_its_address_after_the_last_at() {
        assert_eq!(advertised("w1@127.0.0.1:9464"), Some("127.0.0.1:9464"));
        assert_eq!(advertised("me@corp@host:1"), Some("host:1"));
        assert_eq!(advertised("w1"), None);
        assert_eq!(advertised("w1@"), None);
    }
}
