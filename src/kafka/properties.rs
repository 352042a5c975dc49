//! Client properties from the places users keep them: a Java-style
//! `.properties` file (what Confluent Cloud, MSK and Aiven hand out) and
//! `SLUICE_KAFKA_*` environment variables. librdkafka and the Java client
//! mostly share property names; where the Java file says something
//! librdkafka spells otherwise (the JAAS line, a PEM trust store), it is
//! translated, and Schema Registry or serializer settings, which are not
//! the Kafka client's, are set aside with a note.

use std::path::Path;

/// Variables named `SLUICE_KAFKA_SASL_PASSWORD` set `sasl.password`.
pub const ENV_PREFIX: &str = "SLUICE_KAFKA_";

/// Variables with that prefix that are sluice's own flags, not properties.
const ENV_FLAGS: [&str; 1] = ["SLUICE_KAFKA_CONFIG_FILE"];

#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    /// The user's: the file is missing or unreadable.
    #[error("cannot read Kafka properties file {path}: {cause}")]
    Read { path: String, cause: String },
    /// The user's: a line that is not key=value.
    #[error("{path}, line {line}: expected key=value (a Java properties line), got {text:?}")]
    Line {
        path: String,
        line: usize,
        text: String,
    },
    /// The user's: a setting librdkafka has no equivalent for.
    #[error("{path}: {key}: {hint}")]
    Unsupported {
        path: String,
        key: String,
        hint: String,
    },
}

/// What a file or the environment holds: properties for librdkafka, and
/// notes on what was translated or set aside (they name keys, never values).
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub properties: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// Reads a properties file.
pub fn read_file(path: &Path) -> Result<Loaded, PropertiesError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| PropertiesError::Read {
        path: shown.clone(),
        cause: e.to_string(),
    })?;
    translate(&shown, parse(&shown, &text)?)
}

/// The properties set by `SLUICE_KAFKA_*` variables (`_` for `.`, any case).
pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(k, _)| !ENV_FLAGS.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            let name = k.strip_prefix(ENV_PREFIX)?;
            (!name.is_empty()).then(|| (name.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    // The environment has no order: sorted, so runs are alike.
    out.sort();
    out
}

/// Java properties syntax: `key=value`, `key: value` or `key value`;
/// `#`/`!` comments; a trailing backslash continues the line.
fn parse(path: &str, text: &str) -> Result<Vec<(usize, String, String)>, PropertiesError> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, first)) = lines.next() {
        let mut logical = first.trim_start().to_string();
        if logical.is_empty() || logical.starts_with('#') || logical.starts_with('!') {
            continue;
        }
        while continues(&logical) {
            logical.pop();
            match lines.next() {
                Some((_, next)) => logical.push_str(next.trim_start()),
                None => break,
            }
        }
        let (key, value) = split(&logical);
        if key.is_empty() {
            return Err(PropertiesError::Line {
                path: path.into(),
                line: i + 1,
                text: first.chars().take(40).collect(),
            });
        }
        out.push((i + 1, unescape(&key), unescape(&value)));
    }
    Ok(out)
}

fn continues(line: &str) -> bool {
    line.chars().rev().take_while(|c| *c == '\\').count() % 2 == 1
}

/// The key ends at the first unescaped `=`, `:` or blank.
fn split(line: &str) -> (String, String) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                let rest = line[i..].trim_start_matches([' ', '\t']);
                let rest = rest
                    .strip_prefix(['=', ':'])
                    .map_or(rest, |r| r.trim_start_matches([' ', '\t']));
                return (line[..i].to_string(), rest.trim_end().to_string());
            }
            _ => {}
        }
    }
    (line.trim_end().to_string(), String::new())
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(u) => out.push(u),
                    None => out.push_str(&hex),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// Keys that are not the Kafka client's (Schema Registry, serializers):
/// skipped, with what to use instead.
fn set_aside(key: &str) -> Option<&'static str> {
    if key.starts_with("schema.registry.") || key.starts_with("basic.auth.") {
        Some(
            "a Schema Registry setting: give the registry's URL and credentials to sluice's registry settings, not to the Kafka client",
        )
    } else if key.ends_with(".serializer") || key.ends_with(".deserializer") {
        Some("sluice's topologies choose their own (Avro, Confluent wire format)")
    } else if key == "client.dns.lookup" {
        Some("Java-client only; librdkafka resolves every address it is given")
    } else {
        None
    }
}

fn translate(path: &str, lines: Vec<(usize, String, String)>) -> Result<Loaded, PropertiesError> {
    let unsupported = |key: &str, hint: &str| PropertiesError::Unsupported {
        path: path.into(),
        key: key.into(),
        hint: hint.into(),
    };
    let truststore_pem = lines
        .iter()
        .any(|(_, k, v)| k == "ssl.truststore.type" && v.eq_ignore_ascii_case("PEM"));
    let mut loaded = Loaded::default();
    for (line, key, value) in lines {
        match key.as_str() {
            "sasl.jaas.config" => {
                let (user, pass) = jaas_credentials(&value).ok_or_else(|| {
                    unsupported(&key, &format!("line {line}: only PlainLoginModule and ScramLoginModule lines with username=\"…\" password=\"…\" can be used; set sasl.username and sasl.password instead"))
                })?;
                loaded.properties.push(("sasl.username".into(), user));
                loaded.properties.push(("sasl.password".into(), pass));
                loaded
                    .notes
                    .push(format!("{key} read as sasl.username and sasl.password"));
            }
            "ssl.truststore.type" if truststore_pem => {}
            "ssl.truststore.location" if truststore_pem => {
                loaded.properties.push(("ssl.ca.location".into(), value));
                loaded
                    .notes
                    .push(format!("{key} (PEM) read as ssl.ca.location"));
            }
            k if k.starts_with("ssl.truststore.") || k.starts_with("ssl.keystore.") => {
                return Err(unsupported(
                    &key,
                    "Java key stores are not readable by librdkafka: give the CA as a PEM file with ssl.ca.location (and a client certificate with ssl.certificate.location / ssl.key.location)",
                ));
            }
            k => match set_aside(k) {
                Some(why) => loaded.notes.push(format!("{key} ignored: {why}")),
                None => loaded.properties.push((key, value)),
            },
        }
    }
    Ok(loaded)
}

/// `… LoginModule required username="u" password="p";` → (u, p).
fn jaas_credentials(line: &str) -> Option<(String, String)> {
    if !(line.contains("PlainLoginModule") || line.contains("ScramLoginModule")) {
        return None;
    }
    let field = |name: &str| -> Option<String> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[at..];
        let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let body = &rest[1..];
        Some(body[..body.find(quote)?].to_string())
    };
    Some((field("username")?, field("password")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Loaded, PropertiesError> {
        translate("client.properties", parse("client.properties", text)?)
    }

    #[test]
    fn a_confluent_cloud_file_reads_as_librdkafka_properties() {
        let text = "# Required connection configs for Kafka producer, consumer, and admin\n\
            bootstrap.servers=pkc-xxxx.eu-west-1.aws.confluent.cloud:9092\n\
            security.protocol=SASL_SSL\n\
            sasl.mechanisms=PLAIN\n\
            sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username='KEY' password='S3:cr=t';\n\
            client.dns.lookup=use_all_dns_ips\n\
            session.timeout.ms  :  45000\n\
            schema.registry.url=https://psrc-xxxx.confluent.cloud\n\
            basic.auth.user.info=SRKEY:SRSECRET\n";
        let l = load(text).unwrap();
        let get = |k: &str| {
            l.properties
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("sasl.username"), Some("KEY"));
        assert_eq!(get("sasl.password"), Some("S3:cr=t"));
        assert_eq!(get("session.timeout.ms"), Some("45000"));
        assert_eq!(get("sasl.mechanisms"), Some("PLAIN"));
        assert_eq!(get("client.dns.lookup"), None);
        assert_eq!(get("basic.auth.user.info"), None);
        let notes = l.notes.join("\n");
        assert!(notes.contains("schema.registry.url ignored"), "{notes}");
        assert!(
            !notes.contains("S3:cr=t") && !notes.contains("SRSECRET"),
            "{notes}"
        );
    }

    #[test]
    fn continuations_escapes_and_bad_lines() {
        let l = load("a.b = one \\\n    two\nc\\=d=e\\u0041\n! comment\n").unwrap();
        assert_eq!(
            l.properties,
            vec![
                ("a.b".into(), "one two".into()),
                ("c=d".into(), "eA".into())
            ]
        );
        assert!(matches!(
            load("=x"),
            Err(PropertiesError::Line { line: 1, .. })
        ));
        let e = load("ssl.truststore.location=/x.jks")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssl.ca.location"), "{e}");
        let pem = load("ssl.truststore.type=PEM\nssl.truststore.location=/ca.pem").unwrap();
        assert_eq!(
            pem.properties,
            vec![("ssl.ca.location".into(), "/ca.pem".into())]
        );
        let oauth = load(
            "sasl.jaas.config=org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;",
        );
        assert!(matches!(oauth, Err(PropertiesError::Unsupported { .. })));
    }

    #[test]
    fn environment_variables_name_properties() {
        let vars = [
            ("SLUICE_KAFKA_SASL_PASSWORD", "p"),
            ("SLUICE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("SLUICE_KAFKA_CONFIG_FILE", "/f"),
            ("KAFKA_BOOTSTRAP_SERVERS", "b:9092"),
            ("SLUICE_KAFKA_", "x"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        assert_eq!(
            from_env(vars),
            vec![
                ("sasl.password".into(), "p".into()),
                ("security.protocol".into(), "SASL_SSL".into())
            ]
        );
    }
}
