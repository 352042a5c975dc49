//! sluice's runtime with nothing to compute: each record's bytes go out as
//! they came in, through the same consumer, transactions and commits as a
//! topology. Between the pass-through and the topology, it shows how much
//! of the difference is the runtime and how much the topology's own work.

use std::sync::Arc;

use super::e2e::{Measured, Setup, run_workers};
use crate::topologies::user_login;
use sluice::{
    avro::{AvroCodec, Reader},
    topology::{Emitted, Failure, Input, Output, Payload, Processor, Target},
};

/// Copies each record's bytes to the topology's first sink (its topic).
struct Identity {
    sink: Arc<str>,
    reader: Reader,
}

impl Processor for Identity {
    fn process(
        &self,
        _: &AvroCodec,
        input: Input<'_>,
        out: &mut Vec<Emitted>,
    ) -> Result<(), Failure> {
        out.push(Emitted {
            to: Target::Sink(0),
            payload: Payload::Record(Output {
                topic: self.sink.clone(),
                key: input.key.map(<[u8]>::to_vec),
                value: input.value.unwrap_or_default().to_vec(),
                timestamp_ms: input.timestamp_ms,
            }),
        });
        Ok(())
    }

    fn reader(&self) -> &Reader {
        &self.reader
    }
}

pub async fn runtime_only(s: &Setup<'_>) -> anyhow::Result<Measured> {
    let (input, output) = s.topics("runtime");
    let dlq = format!("{input}.dlq");
    s.create(&[&input, &output, &dlq]).await?;
    // The sink opens with its topic's latest schema, as a topology's does.
    s.register(&output, user_login::SINK).await?;
    let payloads = s.payloads(user_login::SOURCE).await?;
    let name = format!("bench-{}-runtime", s.run_id);
    let reader = Reader::new(apache_avro::Schema::Bytes);
    let topology =
        user_login::declare(&name, &input, &output)?.with_processor(Arc::new(Identity {
            sink: output.as_str().into(),
            reader,
        }));
    let label = format!("sluice runtime, no decode, {}", s.guarantee);
    let measured = run_workers(s, "runtime", topology, &label, (&input, &output), payloads).await;
    s.drop_topics(&[&input, &output, &dlq]).await;
    measured
}
