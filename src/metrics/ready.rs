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
