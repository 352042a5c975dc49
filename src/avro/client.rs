//! A small client of the Confluent Schema Registry REST API, for what the
//! converter crate does not do: registering our schemas and reporting
//! incompatibilities with the subject, versions and reasons.

use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use url::Url;

use crate::{config::redact_url, registry::Credentials};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// Where the registry is and how to log in to it.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    pub url: Url,
    pub credentials: Option<Credentials>,
    pub timeout: Duration,
    /// A PEM file of CAs to trust besides the system's (a private registry's).
    pub ca: Option<std::path::PathBuf>,
}

impl RegistryConfig {
    /// Credentials may come in the URL (`http://user:pass@host`) or apart;
    /// apart wins.
    pub fn new(url: &str, credentials: Option<Credentials>) -> Result<Self, ClientError> {
        let mut url = Url::parse(url).map_err(|e| ClientError::BadUrl {
            url: redact_url(url),
            reason: e.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ClientError::BadUrl {
                url: redact_url(url.as_str()),
                reason: "the scheme must be http or https".into(),
            });
        }
        let in_url = (!url.username().is_empty()).then(|| Credentials {
            user: url.username().to_string(),
            password: url.password().unwrap_or_default().to_string(),
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self {
            url,
            credentials: credentials.or(in_url),
            timeout: Duration::from_secs(30),
            ca: None,
        })
    }

    /// Trusts the CAs in this PEM file too.
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.ca = ca;
        self
    }

    /// An HTTP client builder that trusts `ca` as well as the system's CAs.
    pub fn http(&self) -> Result<reqwest::ClientBuilder, ClientError> {
        let mut b = reqwest::Client::builder().timeout(self.timeout);
        if let Some(path) = &self.ca {
            let bad = |reason: String| ClientError::BadCa {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE block in it".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        Ok(b)
    }

    /// The URL without credentials or trailing slash.
    pub fn base_url(&self) -> String {
        self.url.as_str().trim_end_matches('/').to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("schema registry URL {url} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    /// The user's: the registry refused the credentials (401) or this user (403).
    #[error(
        "schema registry at {url} refused the credentials ({status}): check the registry credentials (user:password in the URL, or the basic-auth user info)"
    )]
    Unauthorized { url: String, status: u16 },
    /// The user's: --registry-ca names no readable PEM file of certificates.
    #[error("cannot read the registry's CA file {path}: {reason}")]
    BadCa { path: String, reason: String },
    /// Network or server trouble: retrying may help.
    #[error("schema registry at {url} unreachable: {reason}")]
    Unavailable { url: String, reason: String },
    /// The registry refused the schema as incompatible: fix the schema or the level.
    #[error(
        "subject {subject}: the schema is incompatible with the registered {against} under compatibility {level}: {reason}"
    )]
    Incompatible {
        subject: String,
        against: String,
        level: String,
        reason: String,
    },
    /// Any other refusal (bad schema, auth, …), with the registry's own words.
    #[error(
        "subject {subject}: registry refused the request ({status}, error code {code}): {message}"
    )]
    Refused {
        subject: String,
        status: u16,
        code: u32,
        message: String,
    },
}

/// reqwest's message names the request only; why it failed (a refused
/// connection, an untrusted certificate) is in its sources.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: u32,
    message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub id: u32,
    pub version: u32,
    /// False when the subject already had this schema.
    pub new_version: bool,
}

#[derive(Clone)]
pub struct RegistryClient {
    config: RegistryConfig,
    http: reqwest::Client,
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, ClientError> {
        let http = config
            .http()?
            .build()
            .map_err(|e| ClientError::Unavailable {
                url: config.base_url(),
                reason: e.to_string(),
            })?;
        Ok(Self { config, http })
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.config.url.clone();
        url.path_segments_mut()
            .expect("http(s) URLs have paths")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn call(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<Result<serde_json::Value, (StatusCode, ErrorBody)>, ClientError> {
        let req = match &self.config.credentials {
            Some(c) => req.basic_auth(&c.user, Some(&c.password)),
            None => req,
        };
        let unavailable = |e: reqwest::Error| ClientError::Unavailable {
            url: self.config.base_url(),
            reason: with_causes(&e),
        };
        let resp = req
            .header("Accept", CONTENT_TYPE)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(ClientError::Unauthorized {
                url: self.config.base_url(),
                status: status.as_u16(),
            });
        }
        let text = resp.text().await.map_err(unavailable)?;
        if status.is_success() {
            return serde_json::from_str(&text)
                .map(Ok)
                .map_err(|e| ClientError::Unavailable {
                    url: self.config.base_url(),
                    reason: format!("unreadable answer ({e}): {text}"),
                });
        }
        if status.is_server_error() {
            return Err(ClientError::Unavailable {
                url: self.config.base_url(),
                reason: format!("{status}: {text}"),
            });
        }
        let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
            error_code: u32::from(status.as_u16()),
            message: text,
        });
        Ok(Err((status, body)))
    }

    fn refused(subject: &str, (status, body): (StatusCode, ErrorBody)) -> ClientError {
        ClientError::Refused {
            subject: subject.to_string(),
            status: status.as_u16(),
            code: body.error_code,
            message: body.message,
        }
    }

    /// The latest live version number of a subject, if it has one.
    pub async fn latest_version(&self, subject: &str) -> Result<Option<u32>, ClientError> {
        let req = self
            .http
            .get(self.url(&["subjects", subject, "versions", "latest"]));
        match self.call(req).await? {
            Ok(v) => Ok(v["version"].as_u64().map(|v| v as u32)),
            Err((_, e)) if e.error_code == 40401 || e.error_code == 40402 => Ok(None),
            Err(e) => Err(Self::refused(subject, e)),
        }
    }

    pub async fn compatibility_level(&self, subject: &str) -> Result<String, ClientError> {
        let mut url = self.url(&["config", subject]);
        url.set_query(Some("defaultToGlobal=true"));
        match self.call(self.http.get(url)).await? {
            Ok(v) => Ok(v["compatibilityLevel"]
                .as_str()
                .unwrap_or("BACKWARD")
                .to_string()),
            // Registries without subject-level config fall back to the global one.
            Err(_) => match self.call(self.http.get(self.url(&["config"]))).await? {
                Ok(v) => Ok(v["compatibilityLevel"]
                    .as_str()
                    .unwrap_or("BACKWARD")
                    .to_string()),
                Err(e) => Err(Self::refused(subject, e)),
            },
        }
    }

    /// Registers `schema` under `subject`, or finds it already there.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<Registered, ClientError> {
        let latest = self.latest_version(subject).await?;
        let body = json!({ "schema": schema, "schemaType": "AVRO" });
        let req = self
            .http
            .post(self.url(&["subjects", subject, "versions"]))
            .header("Content-Type", CONTENT_TYPE)
            .body(body.to_string());
        let id = match self.call(req).await? {
            Ok(v) => v["id"].as_u64().unwrap_or_default() as u32,
            Err((status, e)) if status == StatusCode::CONFLICT => {
                return Err(ClientError::Incompatible {
                    subject: subject.to_string(),
                    against: match latest {
                        Some(v) => format!("version {v} (latest)"),
                        None => "versions".into(),
                    },
                    level: self.compatibility_level(subject).await?,
                    reason: e.message,
                });
            }
            Err(e) => return Err(Self::refused(subject, e)),
        };
        let req = self
            .http
            .post(self.url(&["subjects", subject]))
            .header("Content-Type", CONTENT_TYPE)
            .body(body.to_string());
        let version = match self.call(req).await? {
            Ok(v) => v["version"].as_u64().unwrap_or_default() as u32,
            Err(e) => return Err(Self::refused(subject, e)),
        };
        Ok(Registered {
            subject: subject.to_string(),
            id,
            version,
            new_version: latest.is_none_or(|l| version > l),
        })
    }
}

impl RegistryClient {
    /// Registers each schema under its subject; one line per subject
    /// saying what happened. An incompatible change is refused, naming the
    /// subject and why.
    pub async fn register_all(
        &self,
        files: &[crate::schemas::SchemaFile],
    ) -> Result<Vec<String>, ClientError> {
        let mut lines = Vec::new();
        for file in files {
            let done = self.register(&file.subject(), &file.text).await?;
            let what = if done.new_version {
                "registered"
            } else {
                "unchanged"
            };
            lines.push(format!(
                "{}: {what}, id {}, version {}",
                done.subject, done.id, done.version
            ));
        }
        Ok(lines)
    }
}
