//! `sluice simulate logins`: UserLogin events shaped like real sign-ins.

use std::{future::Future, sync::Arc, time::Duration};

use rand::{Rng, SeedableRng, rngs::StdRng, seq::IndexedRandom};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use crate::topologies::user_login::{SOURCE, UserLogin};
use sluice::{
    avro::{AvroCodec, CodecError, wire},
    kafka::KafkaConfig,
};

const APP_VERSIONS: &[&str] = &["2.3.1", "2.3.0", "2.2.7", "3.0.0-beta.2", "1.9.12"];
const LOCALES: &[&str] = &[
    "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "ja-JP", "pt-BR", "nl-NL",
];
/// Clients report device types in whatever case they like.
const DEVICE_TYPES: &[&str] = &[
    "Android", "iOS", "IOS", "web", "Web", "iPadOS", "android", "Desktop",
];

/// What the generator meant a record to be, so tests can count outcomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// A login that passes validation.
    Valid(UserLogin),
    /// Well-formed Avro that breaks a validation rule.
    Invalid(UserLogin),
    /// Bytes that cannot be decoded, and the decoder's reason for it.
    Undecodable(Vec<u8>, &'static str),
}

pub struct Generator {
    rng: StdRng,
    bad_ratio: f64,
    users: Vec<String>,
}

impl Generator {
    /// `bad_ratio` of the records (0.0–1.0) are invalid or undecodable.
    pub fn new(seed: u64, bad_ratio: f64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let users = (0..500)
            .map(|_| {
                uuid::Builder::from_random_bytes(rng.random())
                    .into_uuid()
                    .to_string()
            })
            .collect();
        Self {
            rng,
            bad_ratio: bad_ratio.clamp(0.0, 1.0),
            users,
        }
    }

    pub fn valid(&mut self, now_secs: i64) -> UserLogin {
        let rng = &mut self.rng;
        let ip = if rng.random_bool(0.8) {
            format!(
                "{}.{}.{}.{}",
                rng.random_range(1..224),
                rng.random::<u8>(),
                rng.random::<u8>(),
                rng.random_range(1..255)
            )
        } else {
            format!(
                "2001:db8:{:x}::{:x}",
                rng.random::<u16>(),
                rng.random::<u16>()
            )
        };
        UserLogin {
            user_id: self.users.choose(rng).cloned().unwrap_or_default(),
            app_version: APP_VERSIONS.choose(rng).unwrap().to_string(),
            ip,
            locale: LOCALES.choose(rng).unwrap().to_string(),
            device_id: format!("dev-{:06x}", rng.random_range(0..0xff_ffff)),
            timestamp: now_secs - rng.random_range(0..5),
            device_type: DEVICE_TYPES.choose(rng).unwrap().to_string(),
        }
    }

    pub fn next(&mut self, now_secs: i64) -> Planned {
        let login = self.valid(now_secs);
        if !self.rng.random_bool(self.bad_ratio) {
            return Planned::Valid(login);
        }
        let mut bad = login;
        match self.rng.random_range(0..7) {
            0 => bad.user_id = "not-a-uuid".into(),
            1 => bad.ip = "300.1.2.3".into(),
            2 => bad.device_type = String::new(),
            3 => bad.timestamp = 0,
            4 => {
                let json = format!(r#"{{"user_id":"{}","oops":"json, not avro"}}"#, bad.user_id);
                return Planned::Undecodable(json.into_bytes(), "bad_magic_byte");
            }
            5 => {
                let mut b = Vec::new();
                wire::write_header(&mut b, 0x7fff_fff0);
                b.extend_from_slice(b"\x02ab");
                return Planned::Undecodable(b, "unknown_schema_id");
            }
            _ => return Planned::Undecodable(vec![0, 0, 0], "truncated_header"),
        }
        Planned::Invalid(bad)
    }
}

impl Planned {
    pub fn key(&self) -> Option<&str> {
        match self {
            Planned::Valid(l) | Planned::Invalid(l) => Some(&l.user_id),
            Planned::Undecodable(..) => None,
        }
    }

    pub async fn encode(&self, codec: &AvroCodec) -> Result<Vec<u8>, CodecError> {
        match self {
            Planned::Valid(l) | Planned::Invalid(l) => codec.encode(SOURCE, l).await,
            Planned::Undecodable(b, _) => Ok(b.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Records per second; 0 for as fast as possible.
    pub rate: u64,
    /// Stop after this many; `None` runs until shutdown.
    pub count: Option<u64>,
    pub bad_ratio: f64,
    pub seed: u64,
    /// Counts what was produced, for the simulator's /metrics.
    pub observed: Option<std::sync::Arc<super::metrics::SimulatorState>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub valid: u64,
    pub invalid: u64,
    pub undecodable: u64,
}

impl Report {
    pub fn total(&self) -> u64 {
        self.valid + self.invalid + self.undecodable
    }
}

/// Produces logins to `user-login` until `count` or `shutdown`.
pub async fn run(
    kafka: &KafkaConfig,
    codec: Arc<AvroCodec>,
    opts: &Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<Report> {
    let producer: FutureProducer = kafka.producer(None).create()?;
    let mut generator = Generator::new(opts.seed, opts.bad_ratio);
    let mut report = Report::default();
    let mut tick = (opts.rate > 0).then(|| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / opts.rate as f64));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        i
    });
    tokio::pin!(shutdown);
    let mut pending = Vec::new();
    while opts.count.is_none_or(|c| report.total() < c) {
        if let Some(t) = tick.as_mut() {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = t.tick() => {}
            }
        } else if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
            break;
        }
        let planned = generator.next(chrono::Utc::now().timestamp());
        let bytes = planned.encode(&codec).await?;
        let mut record = FutureRecord::<str, [u8]>::to(SOURCE).payload(&bytes);
        if let Some(k) = planned.key() {
            record = record.key(k);
        }
        let delivery = loop {
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        };
        pending.push(delivery);
        if let Some(o) = &opts.observed {
            o.produced(1);
        }
        match planned {
            Planned::Valid(_) => report.valid += 1,
            Planned::Invalid(_) => report.invalid += 1,
            Planned::Undecodable(..) => report.undecodable += 1,
        }
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                d.await?.map_err(|(e, _)| e)?;
            }
        }
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    sluice::kafka::blocking(|| producer.flush(Duration::from_secs(30)))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topologies::user_login::validate;

    #[test]
    fn planned_outcomes_match_the_validation_rules() {
        let mut g = Generator::new(7, 0.3);
        let now = 1_800_000_000;
        let (mut bad, mut total) = (0, 0);
        for _ in 0..2000 {
            total += 1;
            match g.next(now) {
                Planned::Valid(l) => assert_eq!(validate(&l, now), Ok(()), "{l:?}"),
                Planned::Invalid(l) => {
                    bad += 1;
                    assert!(validate(&l, now).is_err(), "{l:?}");
                }
                Planned::Undecodable(b, kind) => {
                    bad += 1;
                    assert!(wire::split(&b).is_err() || kind == "unknown_schema_id");
                }
            }
        }
        let share = bad as f64 / total as f64;
        assert!((0.25..0.35).contains(&share), "{share}");
    }
}
