//! The Confluent Schema Registry REST API over a `Store`.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{
        DefaultBodyLimit, FromRequest, Path, Query, Request, State,
        rejection::{BytesRejection, FailedToBufferBody},
    },
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use super::{
    error::RegistryError,
    model::{self, Level, ParsedSchema, VersionSpec},
    store::Store,
};

pub const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What every handler shares: the store and the request body cap.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub max_body: usize,
}
type ApiResult = Result<Response, RegistryError>;
type Params = Query<HashMap<String, String>>;

pub fn routes(max_body: usize) -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { reply(json!({})) }))
        .route("/schemas/types", get(|| async { reply(json!(["AVRO"])) }))
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
        .route("/subjects", get(list_subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route(
            "/subjects/{subject}/versions",
            get(list_versions).post(register),
        )
        .route(
            "/subjects/{subject}/versions/{version}",
            get(get_version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(get_raw_version),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_one),
        )
        .fallback(|| async { RegistryError::RouteNotFound })
        .layer(DefaultBodyLimit::max(max_body))
}

pub fn reply(body: Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (status, code) = self.codes();
        if status.is_server_error() {
            tracing::error!(error = %self, "registry request failed");
        } else {
            tracing::debug!(error = %self, "registry request refused");
        }
        let body = json!({ "error_code": code, "message": self.to_string() });
        (
            status,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response()
    }
}

/// A JSON body, accepted under any content type Confluent clients send, with
/// oversize and malformed bodies turned into Confluent errors.
pub struct Body<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = RegistryError;
    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                RegistryError::BodyTooLarge(state.max_body)
            }
            other => RegistryError::MalformedBody(other.body_text()),
        })?;
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| RegistryError::MalformedBody(e.to_string()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaRequest {
    #[serde(default)]
    schema: String,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

impl SchemaRequest {
    fn parse(&self) -> Result<ParsedSchema, RegistryError> {
        if let Some(t) = &self.schema_type
            && !t.eq_ignore_ascii_case("AVRO")
        {
            return Err(RegistryError::InvalidSchema(format!(
                "schema type {t} is not supported; this registry stores AVRO only"
            )));
        }
        if !self.references.is_empty() {
            return Err(RegistryError::InvalidSchema(
                "schema references are not supported; inline the referenced types".into(),
            ));
        }
        model::parse_schema(&self.schema)
    }
}

fn flag(q: &HashMap<String, String>, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

fn parse_id(id: &str) -> Result<i64, RegistryError> {
    id.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
}

async fn schema_text(store: &Arc<dyn Store>, id: &str) -> Result<String, RegistryError> {
    store
        .schema_by_id(parse_id(id)?)
        .await?
        .ok_or_else(|| RegistryError::SchemaNotFound(id.to_string()))
}

async fn schema_by_id(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(reply(json!({ "schema": schema_text(&store, &id).await? })))
}

async fn raw_schema_by_id(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult {
    Ok(reply(
        serde_json::from_str(&schema_text(&store, &id).await?).unwrap_or(Value::Null),
    ))
}

async fn versions_of_id(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult {
    schema_text(&store, &id).await?;
    let uses = store.usages(parse_id(&id)?, flag(&q, "deleted")).await?;
    let list: Vec<Value> = uses
        .into_iter()
        .map(|(subject, version)| json!({ "subject": subject, "version": version }))
        .collect();
    Ok(reply(json!(list)))
}

async fn subjects_of_id(
    State(AppState { store, .. }): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult {
    schema_text(&store, &id).await?;
    let mut subjects: Vec<String> = store
        .usages(parse_id(&id)?, flag(&q, "deleted"))
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    subjects.dedup();
    Ok(reply(json!(subjects)))
}

async fn list_subjects(
    State(AppState { store, .. }): State<AppState>,
    Query(q): Params,
) -> ApiResult {
    Ok(reply(json!(store.subjects(flag(&q, "deleted")).await?)))
}

async fn list_versions(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let all = store.versions(&subject).await?;
    let seen: Vec<i32> = model::visible(&all, flag(&q, "deleted"))
        .iter()
        .map(|v| v.version)
        .collect();
    if seen.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    Ok(reply(json!(seen)))
}

async fn register(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Body(req): Body<SchemaRequest>,
) -> ApiResult {
    let parsed = req.parse()?;
    let (id, version) = store.register(&subject, &parsed).await?;
    tracing::info!(%subject, id, version, "schema registered");
    Ok(reply(json!({ "id": id })))
}

async fn lookup(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    Body(req): Body<SchemaRequest>,
) -> ApiResult {
    let parsed = req.parse()?;
    let all = store.versions(&subject).await?;
    let seen = model::visible(&all, flag(&q, "deleted"));
    if seen.is_empty() {
        return Err(RegistryError::SubjectNotFound(subject));
    }
    let found = seen
        .into_iter()
        .find(|v| v.schema == parsed.canonical)
        .ok_or_else(|| RegistryError::SchemaNotFound(format!("for subject '{subject}'")))?;
    Ok(reply(json!({
        "subject": subject, "id": found.id, "version": found.version, "schema": found.schema,
    })))
}

async fn get_version(
    State(AppState { store, .. }): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let spec: VersionSpec = version.parse()?;
    let all = store.versions(&subject).await?;
    let v = model::resolve_version(&subject, &all, spec, flag(&q, "deleted"))?;
    Ok(reply(json!({
        "subject": subject, "id": v.id, "version": v.version, "schema": v.schema,
    })))
}

async fn get_raw_version(
    State(AppState { store, .. }): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let spec: VersionSpec = version.parse()?;
    let all = store.versions(&subject).await?;
    let v = model::resolve_version(&subject, &all, spec, flag(&q, "deleted"))?;
    Ok(reply(
        serde_json::from_str(&v.schema).unwrap_or(Value::Null),
    ))
}

async fn delete_subject(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let permanent = flag(&q, "permanent");
    let removed = store.delete_subject(&subject, permanent).await?;
    tracing::info!(%subject, permanent, ?removed, "subject deleted");
    Ok(reply(json!(removed)))
}

async fn delete_version(
    State(AppState { store, .. }): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
) -> ApiResult {
    let permanent = flag(&q, "permanent");
    let removed = store
        .delete_version(&subject, version.parse()?, permanent)
        .await?;
    tracing::info!(%subject, permanent, version = removed, "schema version deleted");
    Ok(reply(json!(removed)))
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: Option<String>,
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: Option<String>,
}

impl ConfigRequest {
    fn level(&self) -> Result<Level, RegistryError> {
        self.compatibility
            .as_deref()
            .or(self.compatibility_level.as_deref())
            .unwrap_or("")
            .parse()
    }
}

async fn get_global_config(State(AppState { store, .. }): State<AppState>) -> ApiResult {
    let level = store.config(None).await?.unwrap_or(Level::DEFAULT);
    Ok(reply(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_global_config(
    State(AppState { store, .. }): State<AppState>,
    Body(req): Body<ConfigRequest>,
) -> ApiResult {
    let level = req.level()?;
    store.set_config(None, level).await?;
    Ok(reply(json!({ "compatibility": level.as_str() })))
}

async fn get_subject_config(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
) -> ApiResult {
    let level = match store.config(Some(&subject)).await? {
        Some(level) => level,
        None if flag(&q, "defaultToGlobal") => store.effective_level(&subject).await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(reply(json!({ "compatibilityLevel": level.as_str() })))
}

async fn put_subject_config(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Body(req): Body<ConfigRequest>,
) -> ApiResult {
    let level = req.level()?;
    store.set_config(Some(&subject), level).await?;
    Ok(reply(json!({ "compatibility": level.as_str() })))
}

async fn delete_subject_config(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
) -> ApiResult {
    match store.delete_config(&subject).await? {
        Some(old) => Ok(reply(json!({ "compatibilityLevel": old.as_str() }))),
        None => Err(RegistryError::SubjectConfigNotFound(subject)),
    }
}

fn compat_reply(problems: Vec<String>, verbose: bool) -> Response {
    let mut body = json!({ "is_compatible": problems.is_empty() });
    if verbose {
        body["messages"] = json!(problems);
    }
    reply(body)
}

/// Against the versions the subject's level names, as registration would.
async fn check_all(
    State(AppState { store, .. }): State<AppState>,
    Path(subject): Path<String>,
    Query(q): Params,
    Body(req): Body<SchemaRequest>,
) -> ApiResult {
    let parsed = req.parse()?;
    let level = store.effective_level(&subject).await?;
    let existing = model::live_schemas(&store.versions(&subject).await?)?;
    let problems = model::incompatibilities(level, &parsed.schema, &existing);
    Ok(compat_reply(problems, flag(&q, "verbose")))
}

/// Against one version, in the direction(s) the subject's level asks for.
async fn check_one(
    State(AppState { store, .. }): State<AppState>,
    Path((subject, version)): Path<(String, String)>,
    Query(q): Params,
    Body(req): Body<SchemaRequest>,
) -> ApiResult {
    let spec: VersionSpec = version.parse()?;
    let parsed = req.parse()?;
    let all = store.versions(&subject).await?;
    let target = model::resolve_version(&subject, &all, spec, false)?.clone();
    let level = store.effective_level(&subject).await?;
    let existing = model::live_schemas(std::slice::from_ref(&target))?;
    let problems = model::incompatibilities(level, &parsed.schema, &existing);
    Ok(compat_reply(problems, flag(&q, "verbose")))
}
