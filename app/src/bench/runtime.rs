//! sluice's runtime with nothing to compute: each record's bytes go out as
//! they came in, through the same consumer, transactions and commits as a
//! topology. Between the pass-through and the topology, it shows how much
//! of the difference is the runtime and how much the topology's own work.

use std::sync::Arc;

use async_trait::async_trait;

use super::e2e::{Measured, Setup, run_workers};
use crate::topologies::user_login;
use sluice::{
    avro::AvroCodec,
    sink::{Topology, kafka::TopicSpec},
    topology::{Declared, Description, Emitted, Failure, Input, Output, Processor},
};

struct Identity {
    sink: Arc<str>,
}

impl Identity {
    fn copy(&self, input: Input<'_>, out: &mut Vec<Emitted>) {
        out.push(Emitted::Record(Output {
            topic: self.sink.clone(),
            key: input.key.map(<[u8]>::to_vec),
            value: input.value.unwrap_or_default().to_vec(),
            timestamp_ms: input.timestamp_ms,
        }));
    }
}

#[async_trait]
impl Processor for Identity {
    async fn process(
        &self,
        _: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        self.copy(input, out);
        Ok(())
    }

    fn process_cached(
        &self,
        _: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Option<Result<(), Failure>> {
        self.copy(input, out);
        Some(Ok(()))
    }
}

pub async fn runtime_only(s: &Setup<'_>) -> anyhow::Result<Measured> {
    let (input, output) = s.topics("runtime");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &output, &dlq]).await?;
    let payloads = s.payloads(user_login::SOURCE).await?;
    let name = format!("bench-{}-runtime", s.run_id);
    let declared = Declared {
        description: Description {
            group_id: format!("sluice-{name}"),
            name,
            source: input.clone(),
            operators: vec!["identity".to_string()],
            sinks: Vec::new(),
            writes: Vec::new(),
            dead_letter: dlq.clone(),
            late: None,
        },
        processor: Arc::new(Identity {
            sink: output.as_str().into(),
        }),
    };
    let sink = TopicSpec {
        topic: output.clone(),
    };
    let topology = Topology::new(declared, Arc::new(sink));
    let label = format!("sluice runtime, no decode, {}", s.guarantee);
    let measured = run_workers(s, "runtime", topology, &label, (&input, &output), payloads).await;
    s.drop_topics(&[&input, &output, &dlq]).await;
    measured
}
