//! Queries of live state on a worker's metrics port (Kafka Streams'
//! interactive queries, with the RPC layer it leaves to its users):
//!
//! - `GET /stores`: each key-value store of this process: its topology,
//!   key and value types, the partitions held here and their keys;
//! - `GET /stores/{store}/{key}`: the key's value as JSON; 404 when its
//!   partition is held here and it has none; a 308 redirect to the worker
//!   that holds its partition (from the group's assignment and the address
//!   each member advertises); 503 while no member holds it (a rebalance);
//! - `GET /stores/{store}?from=&to=&limit=`: the keys from `from` to `to`
//!   (both included) held here, in key order, a page of at most `limit`
//!   (default 100) with the key the next page starts from, and which
//!   worker holds each other partition.
//!
//! A key is written as text: JSON, or the plain string for a string key.
//! Values are as of each partition's last flush (at most a commit interval
//! behind the records processed).

mod owner;

use std::sync::{Arc, OnceLock};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

pub use owner::{Holder, Owners};

use crate::{
    kafka::{KafkaConfig, partitioner::partition_for},
    state::{Stores, view::Found},
};

/// The most entries one range page gives.
pub const MAX_PAGE: usize = 10_000;

pub struct Queries {
    stores: Stores,
    owners: Owners,
    /// This worker's advertised address, once it is bound.
    me: OnceLock<String>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Answer {
    Value(serde_json::Value),
    /// Held elsewhere: that worker's address.
    Redirect(String),
    /// The user's to fix (a store or key that is not there, a bad key).
    Refused(StatusCode, String),
    /// Not answerable now (a rebalance, the brokers); a retry may help.
    Unavailable(String),
}

impl Queries {
    pub fn new(stores: Stores, kafka: KafkaConfig) -> Arc<Queries> {
        Arc::new(Queries {
            stores,
            owners: Owners::new(kafka),
            me: OnceLock::new(),
        })
    }

    /// Where this worker answers (`host:port`), as it advertises it.
    pub fn set_address(&self, addr: String) {
        let _ = self.me.set(addr);
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/stores", get(list))
            .route("/stores/{store}", get(range))
            .route("/stores/{store}/{key}", get(lookup))
            .with_state(self.clone())
    }

    fn no_store(&self, name: &str) -> Answer {
        let names = self.stores.names();
        let known = if names.is_empty() {
            "this worker has no queryable stores".to_string()
        } else {
            format!("its stores: {}", names.join(", "))
        };
        Answer::Refused(
            StatusCode::NOT_FOUND,
            format!("no store named {name:?} on this worker; {known}"),
        )
    }

    /// `key`'s value in `store`, or where to ask.
    pub async fn find(self: &Arc<Self>, store: &str, key: &str) -> Answer {
        let Some(view) = self.stores.get(store) else {
            return self.no_store(store);
        };
        let bytes = match view.get(key) {
            Err(e) => return Answer::Refused(StatusCode::BAD_REQUEST, e.to_string()),
            Ok(Found::Value(v)) => return Answer::Value(v),
            Ok(Found::Elsewhere(None)) => {
                let held = view.info().partitions;
                return Answer::Refused(
                    StatusCode::NOT_FOUND,
                    format!(
                        "store {store} has no value for {key:?} in the partitions held here ({held:?}); its keys are not by record key, so which worker would hold it cannot be told"
                    ),
                );
            }
            Ok(Found::Elsewhere(Some(bytes))) => bytes,
        };
        let info = view.info();
        let me = self.clone();
        let (group, topic, held) = (
            info.group.clone(),
            info.topic.clone(),
            info.partitions.clone(),
        );
        // The partition first: a key of a partition held here is absent,
        // and the group need not be asked.
        let asked = tokio::task::spawn_blocking(move || {
            let p = partition_for(&bytes, me.owners.partitions(&topic)?);
            if held.contains(&p) {
                return Ok::<_, String>((p, None));
            }
            Ok((p, Some(me.owners.holders(&group, &topic)?)))
        })
        .await;
        let (p, holders) = match asked {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                return Answer::Unavailable(format!("cannot tell which worker holds {key:?}: {e}"));
            }
            Err(e) => return Answer::Unavailable(e.to_string()),
        };
        let Some(holders) = holders else {
            return Answer::Refused(
                StatusCode::NOT_FOUND,
                format!(
                    "store {store} has no value for {key:?} (partition {p} of {}, held here)",
                    info.topic
                ),
            );
        };
        match holders.get(&p) {
            None => Answer::Unavailable(format!(
                "no member of group {} holds partition {p} of {} now (a rebalance?); ask again",
                info.group, info.topic
            )),
            Some(Holder {
                address: Some(addr),
                ..
            }) if Some(addr) != self.me.get() => Answer::Redirect(addr.clone()),
            Some(Holder {
                address: Some(_), ..
            }) => Answer::Unavailable(format!(
                "partition {p} of {} is this worker's and is not restored yet; ask again",
                info.topic
            )),
            Some(Holder { client_id, .. }) => Answer::Unavailable(format!(
                "partition {p} of {} is held by {client_id}, which advertises no address for queries",
                info.topic
            )),
        }
    }
}

/// A JSON error body: `{"error": …}`.
pub fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// `answer` as an HTTP response; a redirect goes to `path` at the holder.
pub fn respond(answer: Answer, path: &[&str]) -> Response {
    match answer {
        Answer::Value(v) => Json(v).into_response(),
        Answer::Refused(status, why) => error(status, why),
        Answer::Unavailable(why) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, why);
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            r
        }
        Answer::Redirect(addr) => match url::Url::parse(&format!("http://{addr}/")) {
            Ok(mut url) => {
                if let Ok(mut segments) = url.path_segments_mut() {
                    segments.pop_if_empty().extend(path);
                }
                let mut r = error(
                    StatusCode::PERMANENT_REDIRECT,
                    format!("held by the worker at {addr}"),
                );
                if let Ok(v) = header::HeaderValue::from_str(url.as_str()) {
                    r.headers_mut().insert(header::LOCATION, v);
                }
                r
            }
            Err(e) => error(
                StatusCode::BAD_GATEWAY,
                format!("the holder advertises {addr:?}, not an address ({e})"),
            ),
        },
    }
}

async fn list(State(q): State<Arc<Queries>>) -> Response {
    let infos: Vec<_> = q.stores.all().iter().map(|s| s.info()).collect();
    Json(infos).into_response()
}

async fn lookup(
    State(q): State<Arc<Queries>>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
    respond(q.find(&store, &key).await, &["stores", &store, &key])
}

#[derive(Debug, Deserialize)]
struct RangeParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

async fn range(
    State(q): State<Arc<Queries>>,
    Path(store): Path<String>,
    Query(params): Query<RangeParams>,
) -> Response {
    let Some(view) = q.stores.get(&store) else {
        return respond(q.no_store(&store), &[]);
    };
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return error(
            StatusCode::BAD_REQUEST,
            format!("limit {limit} is out of range: give 1 to {MAX_PAGE}"),
        );
    }
    let page = match view.range(params.from.as_deref(), params.to.as_deref(), limit) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let info = view.info();
    let me = q.clone();
    let (group, topic) = (info.group.clone(), info.topic.clone());
    let held = page.partitions.len();
    let asked = tokio::task::spawn_blocking(move || {
        let partitions = me.owners.partitions(&topic)?;
        let holders = if held as i32 >= partitions {
            Default::default()
        } else {
            me.owners.holders(&group, &topic)?
        };
        Ok::<_, String>((partitions, holders))
    })
    .await;
    let elsewhere = match asked {
        Ok(Ok((partitions, holders))) => serde_json::to_value(
            (0..partitions)
                .filter(|p| !page.partitions.contains(p))
                .map(|p| {
                    let holder = holders.get(&p);
                    serde_json::json!({
                        "partition": p,
                        "holder": holder.map(|h| h.client_id.clone()),
                        "address": holder.and_then(|h| h.address.clone()),
                    })
                })
                .collect::<Vec<_>>(),
        )
        .unwrap_or_default(),
        Ok(Err(e)) => serde_json::json!({ "error": e }),
        Err(e) => serde_json::json!({ "error": e.to_string() }),
    };
    Json(serde_json::json!({
        "store": store,
        "entries": page.entries,
        "next": page.next,
        "partitions": page.partitions,
        "elsewhere": elsewhere,
    }))
    .into_response()
}
