//! Where the registry keeps subjects, versions, ids and configs: the `Store`
//! trait and the in-memory store. The PostgreSQL store is in `pg.rs`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use async_trait::async_trait;

use super::{
    error::RegistryError,
    model::{self, Level, ParsedSchema, RegisterPlan, VersionRecord, VersionSpec},
};

pub type Result<T> = std::result::Result<T, RegistryError>;

/// Storage for the registry. Mutations run the shared rules in `model` while
/// holding the store's own lock, so a check and the write it allows are atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Subject names; soft-deleted subjects only with `include_deleted`.
    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>>;
    /// All versions of a subject in version order, soft-deleted ones included.
    async fn versions(&self, subject: &str) -> Result<Vec<VersionRecord>>;
    async fn schema_by_id(&self, id: i64) -> Result<Option<String>>;
    /// (subject, version) pairs that use a schema id.
    async fn usages(&self, id: i64, include_deleted: bool) -> Result<Vec<(String, i32)>>;
    /// Subject-level compatibility, or the global one with `None`.
    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>>;
    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<()>;
    /// Removes a subject-level config, returning what it was.
    async fn delete_config(&self, subject: &str) -> Result<Option<Level>>;
    /// Registers (or finds) a schema under a subject: (id, version).
    async fn register(&self, subject: &str, schema: &ParsedSchema) -> Result<(i64, i32)>;
    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>>;
    async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32>;

    /// The level that applies to a subject: its own, else the global, else BACKWARD.
    async fn effective_level(&self, subject: &str) -> Result<Level> {
        if let Some(level) = self.config(Some(subject)).await? {
            return Ok(level);
        }
        Ok(self.config(None).await?.unwrap_or(Level::DEFAULT))
    }
}

#[derive(Default)]
struct MemState {
    /// Schema texts; the id of `schemas[i]` is `i + 1`.
    schemas: Vec<String>,
    ids: HashMap<String, i64>,
    subjects: BTreeMap<String, Vec<VersionRecord>>,
    global: Option<Level>,
    configs: HashMap<String, Level>,
}

impl MemState {
    fn level(&self, subject: &str) -> Level {
        self.configs
            .get(subject)
            .copied()
            .or(self.global)
            .unwrap_or(Level::DEFAULT)
    }
}

/// Keeps everything in process memory; gone when the process ends.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemState>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemState> {
        // A panic while holding the lock cannot leave the state half-written:
        // every mutation below is a single push/assign after all checks.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn subjects(&self, include_deleted: bool) -> Result<Vec<String>> {
        let st = self.lock();
        Ok(st
            .subjects
            .iter()
            .filter(|(_, vs)| !model::visible(vs, include_deleted).is_empty())
            .map(|(s, _)| s.clone())
            .collect())
    }

    async fn versions(&self, subject: &str) -> Result<Vec<VersionRecord>> {
        Ok(self
            .lock()
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default())
    }

    async fn schema_by_id(&self, id: i64) -> Result<Option<String>> {
        let st = self.lock();
        Ok(usize::try_from(id - 1)
            .ok()
            .and_then(|i| st.schemas.get(i).cloned()))
    }

    async fn usages(&self, id: i64, include_deleted: bool) -> Result<Vec<(String, i32)>> {
        let st = self.lock();
        Ok(st
            .subjects
            .iter()
            .flat_map(|(s, vs)| {
                vs.iter()
                    .filter(move |v| v.id == id && (include_deleted || !v.deleted))
                    .map(move |v| (s.clone(), v.version))
            })
            .collect())
    }

    async fn config(&self, subject: Option<&str>) -> Result<Option<Level>> {
        let st = self.lock();
        Ok(match subject {
            None => st.global,
            Some(s) => st.configs.get(s).copied(),
        })
    }

    async fn set_config(&self, subject: Option<&str>, level: Level) -> Result<()> {
        let mut st = self.lock();
        match subject {
            None => st.global = Some(level),
            Some(s) => {
                st.configs.insert(s.to_string(), level);
            }
        }
        Ok(())
    }

    async fn delete_config(&self, subject: &str) -> Result<Option<Level>> {
        Ok(self.lock().configs.remove(subject))
    }

    async fn register(&self, subject: &str, schema: &ParsedSchema) -> Result<(i64, i32)> {
        let mut st = self.lock();
        let level = st.level(subject);
        let existing = st.subjects.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let version = match model::plan_register(subject, existing, level, schema)? {
            RegisterPlan::Existing { id, version } => return Ok((id, version)),
            RegisterPlan::New { version } => version,
        };
        let id = match st.ids.get(&schema.canonical) {
            Some(id) => *id,
            None => {
                st.schemas.push(schema.canonical.clone());
                let id = st.schemas.len() as i64;
                st.ids.insert(schema.canonical.clone(), id);
                id
            }
        };
        st.subjects
            .entry(subject.to_string())
            .or_default()
            .push(VersionRecord {
                version,
                id,
                schema: schema.canonical.clone(),
                deleted: false,
            });
        Ok((id, version))
    }

    async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let mut st = self.lock();
        let existing = st.subjects.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let removed = model::plan_delete_subject(subject, existing, permanent)?;
        if permanent {
            st.subjects.remove(subject);
            st.configs.remove(subject);
        } else if let Some(vs) = st.subjects.get_mut(subject) {
            vs.iter_mut().for_each(|v| v.deleted = true);
        }
        Ok(removed)
    }

    async fn delete_version(
        &self,
        subject: &str,
        spec: VersionSpec,
        permanent: bool,
    ) -> Result<i32> {
        let mut st = self.lock();
        let existing = st.subjects.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let version = model::plan_delete_version(subject, existing, spec, permanent)?;
        if let Some(vs) = st.subjects.get_mut(subject) {
            if permanent {
                vs.retain(|v| v.version != version);
            } else if let Some(v) = vs.iter_mut().find(|v| v.version == version) {
                v.deleted = true;
            }
            if vs.is_empty() {
                st.subjects.remove(subject);
            }
        }
        Ok(version)
    }
}
