//! The console: one read-only page per deployment, served by every worker
//! on its metrics port (`/`), that shows each topology as a graph with
//! its rates and errors, the group's partitions and members, the dead and
//! late letters, the tables' newest windows and rows, and latency. The
//! page (`assets`) polls the JSON under `/api/` every two seconds; what it
//! shows comes from the workers' counters (`history`), the brokers
//! (`kafka`) and the databases (`sink::peek`). A part whose service is
//! down answers with its error, and the rest of the page goes on.

mod assets;
mod history;
pub mod kafka;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};

use crate::{
    avro::{AvroCodec, view},
    commit::letters,
    kafka::KafkaConfig,
    metrics::Metrics,
    sink::{Databases, Table},
    stats::Stats,
    topology::{Description, NodeKind, Topology},
};
use history::{History, Sample};

/// One topology as the console sees it.
struct Watched {
    description: Description,
    tables: Vec<Table>,
    stats: Arc<Stats>,
}

/// What the console reads from.
pub struct Console {
    /// Set once the workers run (before that the page shows none).
    watched: OnceLock<Vec<Watched>>,
    kafka: KafkaConfig,
    codec: Arc<AvroCodec>,
    databases: Databases,
    instance: String,
    metrics: Arc<Metrics>,
    links: Vec<(String, String)>,
    protocol: String,
    queries: Arc<crate::query::Queries>,
    history: Mutex<History>,
    /// Broker answers, kept a second so that many pages cost one request.
    cached: Mutex<BTreeMap<&'static str, (Instant, Value)>>,
}

/// Everything a console is built from.
pub struct Sources {
    pub kafka: KafkaConfig,
    pub codec: Arc<AvroCodec>,
    pub databases: Databases,
    /// This worker's instance id.
    pub instance: String,
    pub metrics: Arc<Metrics>,
    /// Links to show (name, URL): where the brokers' figures are, say.
    pub links: Vec<(String, String)>,
    /// The group protocol the workers join with.
    pub protocol: String,
    /// The stores' queries, for the lookup form.
    pub queries: Arc<crate::query::Queries>,
}

impl Console {
    pub fn new(sources: Sources) -> Arc<Console> {
        Arc::new(Console {
            watched: OnceLock::new(),
            kafka: sources.kafka,
            codec: sources.codec,
            databases: sources.databases,
            instance: sources.instance,
            metrics: sources.metrics,
            links: sources.links,
            protocol: sources.protocol,
            queries: sources.queries,
            history: Mutex::new(History::default()),
            cached: Mutex::new(BTreeMap::new()),
        })
    }

    /// Shows `topologies`, whose workers count into `stats` (by name).
    pub fn watch(self: &Arc<Self>, topologies: &[Topology], stats: &[(String, Arc<Stats>)]) {
        let watched = topologies
            .iter()
            .filter_map(|t| {
                let s = stats.iter().find(|(n, _)| *n == t.description.name)?;
                Some(Watched {
                    description: t.description.clone(),
                    tables: t.tables(),
                    stats: s.1.clone(),
                })
            })
            .collect();
        if self.watched.set(watched).is_ok() {
            self.sample();
            tokio::spawn(sampling(Arc::downgrade(self)));
        }
    }

    fn topologies(&self) -> &[Watched] {
        self.watched.get().map_or(&[], Vec::as_slice)
    }

    /// The page and its JSON, to serve beside `/metrics`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/", get(assets::index))
            .route("/console/{file}", get(assets::file))
            .route("/api/overview", get(overview))
            .route("/api/partitions", get(partitions))
            .route("/api/letters", get(letters))
            .route("/api/tables", get(tables))
            .route("/api/stores/{store}/{key}", get(store))
            .route("/api/{*rest}", get(no_such_api))
            .with_state(self.clone())
    }

    fn sample(&self) {
        let all: Vec<(String, Arc<Stats>)> = self
            .topologies()
            .iter()
            .map(|w| (w.description.name.clone(), w.stats.clone()))
            .collect();
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sample(&all, now_ms());
    }

    /// `make`'s answer, at most a second old.
    async fn cached(
        self: &Arc<Self>,
        key: &'static str,
        make: impl FnOnce(Arc<Console>) -> Value + Send + 'static,
    ) -> Value {
        let fresh = |c: &Console| {
            let m = c.cached.lock().unwrap_or_else(|p| p.into_inner());
            m.get(key)
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1))
                .map(|(_, v)| v.clone())
        };
        if let Some(v) = fresh(self) {
            return v;
        }
        let me = self.clone();
        let v = tokio::task::spawn_blocking(move || make(me))
            .await
            .unwrap_or_else(|e| json!({ "error": e.to_string() }));
        self.cached
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), v.clone()));
        v
    }
}

async fn sampling(console: Weak<Console>) {
    let mut tick = tokio::time::interval(history::EVERY);
    tick.tick().await;
    loop {
        tick.tick().await;
        match console.upgrade() {
            Some(c) => c.sample(),
            None => return,
        }
    }
}

/// The newest windows of a table the page charts (all keys together).
pub const WINDOWS_SHOWN: usize = 400;

fn now_ms() -> i64 {
    crate::topology::clock::processing_time_ms()
}

/// Dead letters whose reason is the source's (undecodable records), not an operator's.
fn source_errors(by_reason: &BTreeMap<String, u64>) -> u64 {
    by_reason
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "validation" | "operator"))
        .map(|(_, n)| n)
        .sum()
}

/// An operator's refusals, by its node's label (`validate(name)`, `map(name)`).
fn refused_at(label: &str, refused: &BTreeMap<String, u64>) -> Option<u64> {
    refused
        .iter()
        .filter(|(op, _)| label == op.as_str() || label.ends_with(&format!("({op})")))
        .map(|(_, n)| *n)
        .reduce(|a, b| a + b)
}

fn graph(w: &Watched, now: &Sample, rates: &history::Rates) -> Vec<Value> {
    let refused = w.stats.refused_by_operator();
    let (mut sink_i, mut op_i) = (0usize, 0usize);
    let mut nodes = Vec::new();
    for (id, n) in w.description.nodes.iter().enumerate() {
        let (records, rate, errors) = match n.kind {
            NodeKind::Source => (
                Some(now.records_in),
                Some(rates.records_in),
                Some(source_errors(&now.by_reason)),
            ),
            NodeKind::Sink => {
                sink_i += 1;
                let i = sink_i - 1;
                (
                    Some(now.sinks.get(i).copied().unwrap_or(0)),
                    Some(rates.sinks.get(i).copied().unwrap_or(0.0)),
                    None,
                )
            }
            NodeKind::Stateful => {
                op_i += 1;
                let i = op_i - 1;
                (
                    Some(now.operators.get(i).copied().unwrap_or(0)),
                    Some(rates.operators.get(i).copied().unwrap_or(0.0)),
                    refused_at(&n.label, &refused),
                )
            }
            _ => (None, None, refused_at(&n.label, &refused)),
        };
        nodes.push(json!({
            "id": id,
            "kind": format!("{:?}", n.kind).to_lowercase(),
            "label": n.label,
            "parents": n.parents,
            "records": records,
            "rate": rate,
            "errors": errors,
        }));
    }
    nodes
}

async fn overview(State(c): State<Arc<Console>>) -> Json<Value> {
    let ready = c.metrics.ready().await;
    let history = c.history.lock().unwrap_or_else(|p| p.into_inner());
    let minute = Duration::from_secs(60);
    let topologies: Vec<Value> = c
        .topologies()
        .iter()
        .map(|w| {
            let d = &w.description;
            let now = Sample::of(&w.stats, now_ms());
            let rates = history.rates(&d.name, &now);
            json!({
                "name": d.name,
                "group": d.group_id,
                "source": d.source,
                "commit": d.commit.to_string(),
                "dead_letter": d.dead_letter,
                "late": d.late,
                "sinks": d.sinks.iter().map(|s| json!({"label": s.label, "guarantee": s.guarantee})).collect::<Vec<_>>(),
                "stores": d.stores.iter().map(|s| json!({"name": s.name, "kept": s.kept, "changelog": s.changelog})).collect::<Vec<_>>(),
                "changelogs": d.changelogs(),
                "nodes": graph(w, &now, &rates),
                "counters": &now,
                "rates": rates,
                "aborts": w.stats.aborts.load(std::sync::atomic::Ordering::Relaxed),
                "latency_ms": w.stats.recent_latency.quantiles(Instant::now(), minute),
                "commit_ms": w.stats.recent_commits.quantiles(Instant::now(), minute),
                "e2e_ms": w.stats.recent_e2e.quantiles(Instant::now(), minute),
                "history": history.of(&d.name),
            })
        })
        .collect();
    Json(json!({
        "instance": c.instance,
        "links": c.links.iter().map(|(name, url)| json!({"name": name, "url": url})).collect::<Vec<_>>(),
        "now_ms": now_ms(),
        "ready": match ready { Ok(()) => json!({"ok": true}), Err(why) => json!({"ok": false, "reason": why}) },
        "topologies": topologies,
    }))
}

async fn partitions(State(c): State<Arc<Console>>) -> Json<Value> {
    Json(
        c.cached("partitions", |c| {
            let groups: Vec<Value> = c
                .topologies()
                .iter()
                .map(|w| {
                    let d = &w.description;
                    let owned = w.stats.owned();
                    let local = kafka::Local {
                        name: &format!("{}-{} (this worker)", d.transactional_prefix, c.instance),
                        owned: &owned,
                        protocol: &c.protocol,
                    };
                    match kafka::group_view(&c.kafka, &d.group_id, &d.source, &local) {
                        Ok(g) => json!({"topology": d.name, "view": g}),
                        Err(e) => json!({"topology": d.name, "group": d.group_id, "error": format!("Kafka: {e}")}),
                    }
                })
                .collect();
            json!({ "groups": groups })
        })
        .await,
    )
}

async fn letters(State(c): State<Arc<Console>>) -> Json<Value> {
    let topics: Vec<(String, &'static str, String)> = c
        .topologies()
        .iter()
        .flat_map(|w| {
            let d = &w.description;
            let mut t = vec![(d.name.clone(), "dead", d.dead_letter.clone())];
            t.extend(d.late.iter().map(|l| (d.name.clone(), "late", l.clone())));
            t
        })
        .collect();
    let read = c
        .cached("letters", move |c| {
            let raw: Vec<_> = topics
                .into_iter()
                .map(|(topology, kind, topic)| {
                    let got = kafka::newest(&c.kafka, &topic, 10);
                    (topology, kind, topic, got)
                })
                .collect();
            let handle = tokio::runtime::Handle::current();
            let out: Vec<Value> = raw
                .into_iter()
                .map(|(topology, kind, topic, got)| match got {
                    Ok(ms) => {
                        let letters: Vec<Value> = ms
                            .iter()
                            .map(|m| handle.block_on(letter(&c.codec, m)))
                            .collect();
                        json!({"topology": topology, "kind": kind, "topic": topic, "letters": letters})
                    }
                    Err(e) => json!({"topology": topology, "kind": kind, "topic": topic, "error": format!("Kafka: {e}")}),
                })
                .collect();
            json!({ "topics": out })
        })
        .await;
    Json(read)
}

/// A letter as `sluice dlq inspect` shows it: its reason and message, where
/// it was read, and its value decoded where it decodes.
async fn letter(codec: &AvroCodec, m: &rdkafka::message::OwnedMessage) -> Value {
    let mut v = view::to_json(codec, m).await;
    let h = v["headers"].clone();
    v["reason"] = h[letters::KIND].clone();
    v["message"] = h[letters::MESSAGE].clone();
    v["source"] = json!(format!(
        "{}/{}/{}",
        view::plain(&h[letters::TOPIC]),
        view::plain(&h[letters::PARTITION]),
        view::plain(&h[letters::OFFSET])
    ));
    v
}

async fn tables(State(c): State<Arc<Console>>) -> Json<Value> {
    let mut out = Vec::new();
    for w in c.topologies() {
        for t in &w.tables {
            let (name, database) = match t {
                Table::Windows(s) => (s.table.as_str(), s.database.as_str()),
                Table::Rows(s) => (s.table.as_str(), s.database.as_str()),
            };
            let mut v =
                json!({"topology": w.description.name, "table": name, "database": database});
            let peek = c.databases.get(database).and_then(|db| db.peek());
            let Some(peek) = peek else {
                v["error"] = json!(format!("database {database:?} is not open in this worker"));
                out.push(v);
                continue;
            };
            let read = match t {
                Table::Windows(s) => {
                    v["kind"] = json!("windows");
                    let keys: Vec<&str> = s.keys.iter().map(|k| k.name.as_str()).collect();
                    v["keys"] = json!(keys);
                    peek.newest_windows(s, WINDOWS_SHOWN)
                        .await
                        .map(|r| json!(r))
                }
                Table::Rows(s) => {
                    v["kind"] = json!("rows");
                    v["columns"] = json!(s.names());
                    peek.newest_rows(s, 20).await.map(|r| json!(r))
                }
            };
            match read {
                Ok(rows) => v["rows"] = rows,
                Err(e) => v["error"] = json!(e.to_string()),
            }
            out.push(v);
        }
    }
    Json(json!({ "tables": out }))
}

use crate::query::error;

/// A key's value in a store, or which worker holds it: the page cannot
/// follow a redirect to another worker's port, so it is told where to look.
async fn store(
    State(c): State<Arc<Console>>,
    Path((store, key)): Path<(String, String)>,
) -> Response {
    use crate::query::Answer;
    if key.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "the key is empty: give the key to look up".into(),
        );
    }
    match c.queries.find(&store, &key).await {
        Answer::Value(value) => {
            Json(json!({ "store": store, "key": key, "value": value })).into_response()
        }
        Answer::Redirect(addr) => Json(json!({
            "store": store,
            "key": key,
            "held_by": format!("the worker at {addr}: its console is http://{addr}/"),
        }))
        .into_response(),
        other => crate::query::respond(other, &[]),
    }
}

async fn no_such_api(Path(rest): Path<String>) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!(
            "no such endpoint /api/{rest}: try /api/overview, /api/partitions, /api/letters, /api/tables"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_go_to_the_node_of_the_operator_that_refused() {
        let refused: BTreeMap<String, u64> =
            [("login-rules".to_string(), 7), ("normalise".to_string(), 2)].into();
        assert_eq!(refused_at("validate(login-rules)", &refused), Some(7));
        assert_eq!(refused_at("map(normalise)", &refused), Some(2));
        assert_eq!(refused_at("normalise", &refused), Some(2));
        assert_eq!(refused_at("key_by(user_id)", &refused), None);
    }

    #[test]
    fn the_source_owns_what_did_not_decode() {
        let by_reason: BTreeMap<String, u64> = [
            ("bad_magic_byte".to_string(), 3),
            ("unknown_schema_id".to_string(), 4),
            ("validation".to_string(), 10),
            ("operator".to_string(), 1),
        ]
        .into();
        assert_eq!(source_errors(&by_reason), 7);
    }
}
