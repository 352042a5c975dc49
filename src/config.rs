//! Settings shared by several commands, and keeping secrets out of logs.

use url::Url;

/// The URL with any password replaced, fit for logs and error messages.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("****"));
            }
            url.to_string()
        }
        // Not a URL we can parse: show nothing of it rather than risk a secret.
        Err(_) => "<unparseable url>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:****@db:5432/x"
        );
        assert_eq!(redact_url("http://reg:8081"), "http://reg:8081/");
        assert!(!redact_url("not a url hunter2").contains("hunter2"));
    }
}
