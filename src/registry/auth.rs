//! Optional HTTP basic auth in front of the registry API.

use std::{fmt, str::FromStr, sync::Arc};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::STANDARD};

use super::error::RegistryError;

/// `user:password`, as in Confluent's `basic.auth.user.info`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}:****)", self.user)
    }
}

impl FromStr for Credentials {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }),
            _ => Err("expected USER:PASSWORD with a non-empty user".to_string()),
        }
    }
}

impl Credentials {
    pub fn header_value(&self) -> String {
        format!(
            "Basic {}",
            STANDARD.encode(format!("{}:{}", self.user, self.password))
        )
    }
}

/// Compares without stopping at the first difference, so timing does not
/// reveal how much of a guessed password was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn require(
    State(expected): State<Arc<Credentials>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if same(given.as_bytes(), expected.header_value().as_bytes()) {
        return next.run(req).await;
    }
    let mut resp = RegistryError::Unauthorized.into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Basic realm=\"sluice-schema-registry\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_hides_password() {
        let c: Credentials = "alice:s3:cret".parse().unwrap();
        assert_eq!(c.password, "s3:cret");
        assert!(!format!("{c:?}").contains("s3"));
        assert!(":x".parse::<Credentials>().is_err());
        assert!("nocolon".parse::<Credentials>().is_err());
    }

    #[test]
    fn comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
