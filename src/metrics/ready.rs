//! What `/readyz` checks besides group membership: the services a worker
//! writes to or reads schemas from must answer, quickly.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::avro::RegistryClient;

const TIMEOUT: Duration = Duration::from_secs(2);

#[async_trait]
pub trait ReadyCheck: Send + Sync + 'static {
    fn name(&self) -> &str;
    async fn check(&self) -> Result<(), String>;
}

struct Postgres(sqlx::PgPool);

#[async_trait]
impl ReadyCheck for Postgres {
    fn name(&self) -> &str {
        "PostgreSQL"
    }

    async fn check(&self) -> Result<(), String> {
        let ping = sqlx::query("SELECT 1").execute(&self.0);
        match tokio::time::timeout(TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {TIMEOUT:?}")),
        }
    }
}

struct Registry(RegistryClient);

#[async_trait]
impl ReadyCheck for Registry {
    fn name(&self) -> &str {
        "schema registry"
    }

    async fn check(&self) -> Result<(), String> {
        // Any answer that is not a transport failure means it is up.
        let probe = self.0.latest_version("sluice-readyz-probe-value");
        match tokio::time::timeout(TIMEOUT, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(crate::avro::ClientError::Unavailable { .. })) | Err(_) => {
                Err("unreachable".to_string())
            }
            Ok(Err(e @ crate::avro::ClientError::Unauthorized { .. })) => Err(e.to_string()),
            Ok(Err(_)) => Ok(()),
        }
    }
}

pub fn postgres_check(pool: sqlx::PgPool) -> Arc<dyn ReadyCheck> {
    Arc::new(Postgres(pool))
}

pub fn registry_check(client: RegistryClient) -> Arc<dyn ReadyCheck> {
    Arc::new(Registry(client))
}

/// Why Kafka does not let this worker in yet (`kafka::access`): being
/// asked, or refused.
#[derive(Debug, Clone, Default)]
pub struct Refused(Arc<std::sync::Mutex<Option<String>>>);

impl Refused {
    pub fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// The `/readyz` check that fails while Kafka refuses.
    pub fn check(&self) -> Arc<dyn ReadyCheck> {
        Arc::new(self.clone())
    }
}

#[async_trait]
impl ReadyCheck for Refused {
    fn name(&self) -> &str {
        "Kafka"
    }

    async fn check(&self) -> Result<(), String> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}
