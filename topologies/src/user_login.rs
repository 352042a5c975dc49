//! `user-login` → validate → normalise → `processed-user-login`.

use serde::{Deserialize, Serialize};

use sluice::prelude::*;

mod ip;

pub const NAME: &str = "user-login";
pub const SOURCE: &str = "user-login";
pub const SINK: &str = "processed-user-login";

/// `schemas/user-login.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLogin {
    pub user_id: String,
    pub app_version: String,
    pub ip: String,
    pub locale: String,
    pub device_id: String,
    /// Seconds since the epoch.
    pub timestamp: i64,
    pub device_type: String,
}

/// `schemas/processed-user-login.avsc`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessedUserLogin {
    pub user_id: String,
    pub app_version: String,
    pub ip: String,
    pub locale: String,
    pub device_id: String,
    pub timestamp: i64,
    pub device_type: String,
    /// Milliseconds since the epoch.
    pub processed_timestamp: i64,
}

impl AvroSchema for UserLogin {
    const SCHEMA: &'static str = include_str!("../../schemas/user-login.avsc");
}

impl AvroSchema for ProcessedUserLogin {
    const SCHEMA: &'static str = include_str!("../../schemas/processed-user-login.avsc");
}

/// 2000-01-01T00:00:00Z: logins before it are certainly bogus clocks.
const EARLIEST: i64 = 946_684_800;
/// Clients' clocks run ahead; more than a day is not a clock skew.
const MAX_AHEAD_SECS: i64 = 24 * 3600;

/// Why a login is refused; the message goes into the dead-letter headers.
pub fn validate(login: &UserLogin, now_secs: i64) -> Result<(), String> {
    // The canonical form, the common case, needs no parse.
    if !is_lower_hyphenated(login.user_id.as_bytes()) {
        uuid::Uuid::parse_str(&login.user_id)
            .map_err(|_| format!("user_id {:?} is not a UUID", login.user_id))?;
    }
    if !ip::is_valid(&login.ip) {
        return Err(format!("ip {:?} is not an IPv4 or IPv6 address", login.ip));
    }
    if login.timestamp < EARLIEST || login.timestamp > now_secs + MAX_AHEAD_SECS {
        return Err(format!(
            "timestamp {} is not plausible (before 2000 or more than a day ahead)",
            login.timestamp
        ));
    }
    if login.device_type.trim().is_empty() {
        return Err("device_type is empty".into());
    }
    Ok(())
}

/// Canonical forms; only called on validated logins. Values already in
/// canonical form are kept as they are, without reallocating.
pub fn normalise(login: UserLogin, now_ms: i64) -> ProcessedUserLogin {
    ProcessedUserLogin {
        user_id: canonical_uuid(login.user_id),
        app_version: login.app_version,
        ip: ip::canonical(login.ip),
        locale: login.locale,
        device_id: login.device_id,
        timestamp: login.timestamp,
        device_type: lower_trimmed(login.device_type),
        processed_timestamp: now_ms,
    }
}

/// Lower-case hyphenated, e.g. 6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77.
fn canonical_uuid(id: String) -> String {
    if id.len() == 36 && is_lower_hyphenated(id.as_bytes()) {
        return id;
    }
    match uuid::Uuid::parse_str(&id) {
        Ok(u) => u
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_string(),
        Err(_) => id,
    }
}

/// Checked without branching per byte (it vectorises): this ran per record
/// and, written as a match on the position, cost as much as the IP check.
fn is_lower_hyphenated(b: &[u8]) -> bool {
    let hex = |group: &[u8]| {
        group.iter().fold(true, |ok, &c| {
            ok & (c.is_ascii_digit() | (b'a'..=b'f').contains(&c))
        })
    };
    b.len() == 36
        && [b[8], b[13], b[18], b[23]] == [b'-'; 4]
        && hex(&b[..8])
        && hex(&b[9..13])
        && hex(&b[14..18])
        && hex(&b[19..23])
        && hex(&b[24..])
}

fn lower_trimmed(mut s: String) -> String {
    let t = s.trim();
    if t.len() == s.len() && s.is_ascii() {
        // In place: no new string for the common "Android" or "iOS".
        s.make_ascii_lowercase();
        return s;
    }
    t.to_lowercase()
}

pub fn build() -> Result<Topology, BuildError> {
    declare(NAME, SOURCE, SINK)
}

/// The same topology on other topics (benchmarks, tests, tenants).
pub fn declare(name: &str, source: &str, sink: &str) -> Result<Topology, BuildError> {
    topology(name)
        .source::<UserLogin>(source)
        .validate("login-rules", |l| {
            validate(l, clock::processing_time_ms() / 1000)
        })
        .map("normalise", |l| normalise(l, clock::processing_time_ms()))
        .key_by("user_id", |l| l.user_id.clone())
        .to_topic(sink)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    pub fn login() -> UserLogin {
        UserLogin {
            user_id: "6F1C2A1E-4B7D-4C59-9F0E-2D5B8A1C3E77".into(),
            app_version: "2.3.1".into(),
            ip: "2001:DB8::0:1".into(),
            locale: "en-GB".into(),
            device_id: "dev-1".into(),
            timestamp: NOW - 5,
            device_type: " Android ".into(),
        }
    }

    #[test]
    fn valid_logins_pass_and_are_normalised() {
        assert_eq!(validate(&login(), NOW), Ok(()));
        let p = normalise(login(), 42);
        assert_eq!(p.user_id, "6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77");
        assert_eq!(p.ip, "2001:db8::1");
        assert_eq!(p.device_type, "android");
        assert_eq!(p.processed_timestamp, 42);
        assert_eq!(p.timestamp, NOW - 5);
    }

    #[test]
    fn canonical_values_are_kept_and_others_rewritten() {
        let id = "6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77";
        assert_eq!(canonical_uuid(id.into()), id);
        assert_eq!(
            canonical_uuid("6F1C2A1E4B7D4C599F0E2D5B8A1C3E77".into()),
            id
        );
        assert_eq!(
            canonical_uuid("{6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e77}".into()),
            id
        );
        assert_eq!(ip::canonical("10.0.0.1".into()), "10.0.0.1");
        assert_eq!(ip::canonical("2001:0DB8:0000::1".into()), "2001:db8::1");
        assert_eq!(ip::canonical("::FFFF:1.2.3.4".into()), "::ffff:1.2.3.4");
        assert_eq!(lower_trimmed("web".into()), "web");
        assert_eq!(lower_trimmed(" iPadOS ".into()), "ipados");
        assert_eq!(lower_trimmed("ÄNDROID".into()), "ändroid");
    }

    #[test]
    fn canonical_and_other_uuid_spellings_pass() {
        for _ in 0..1000 {
            let id = uuid::Uuid::new_v4();
            for spelling in [
                id.hyphenated().to_string(),
                id.hyphenated().to_string().to_uppercase(),
                id.simple().to_string(),
            ] {
                let l = UserLogin {
                    user_id: spelling,
                    ..login()
                };
                assert_eq!(validate(&l, NOW), Ok(()), "{}", l.user_id);
            }
        }
    }

    #[test]
    fn each_rule_refuses_with_a_reason() {
        type Spoil = fn(&mut UserLogin);
        let cases: Vec<(Spoil, &str)> = vec![
            (|l| l.user_id = "42".into(), "not a UUID"),
            // Shaped like the canonical form, which skips the parse, but not hex.
            (
                |l| l.user_id = "6f1c2a1e-4b7d-4c59-9f0e-2d5b8a1c3e7g".into(),
                "not a UUID",
            ),
            (
                |l| l.user_id = "6f1c2a1e4-b7d-4c59-9f0e-2d5b8a1c3e77".into(),
                "not a UUID",
            ),
            (|l| l.ip = "999.1.1.1".into(), "not an IPv4 or IPv6"),
            (|l| l.timestamp = 12, "not plausible"),
            (|l| l.timestamp = NOW + 2 * 86_400, "not plausible"),
            (|l| l.device_type = "  ".into(), "device_type is empty"),
        ];
        for (spoil, reason) in cases {
            let mut l = login();
            spoil(&mut l);
            let err = validate(&l, NOW).unwrap_err();
            assert!(err.contains(reason), "{err}");
        }
    }

    #[test]
    fn the_topology_is_declared_as_documented() {
        let t = build().unwrap();
        let d = &t.description;
        assert_eq!(
            (d.source.as_str(), d.writes()),
            ("user-login", vec!["processed-user-login".to_string()])
        );
        assert_eq!(d.dead_letter, "user-login.dlq");
        assert_eq!(
            d.operators(),
            vec!["validate(login-rules)", "map(normalise)", "key_by(user_id)"]
        );
        assert!(d.sinks[0].guarantee.starts_with("exactly-once"));
    }
}
