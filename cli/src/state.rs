//! `sluice state`: a running worker's stores, asked over its metrics port
//! (`/stores`). A key held by another worker is answered by that worker:
//! the first one redirects there.

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// A key's value in a store, as JSON (from whichever worker holds it).
    Get(GetArgs),
    /// The stores a worker serves: their keys and values, partitions held.
    List(WorkerArgs),
    /// A store's keys from --from to --to (both included) held by a worker,
    /// one JSON object per line.
    Range(RangeArgs),
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Any worker's metrics address (`sluice run --metrics-addr`).
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    worker: url::Url,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The store (see `sluice state list`, or `sluice topologies`).
    store: String,
    /// The key: its text for a string key, else JSON.
    key: String,
    #[command(flatten)]
    worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct RangeArgs {
    store: String,
    #[arg(long)]
    from: Option<String>,
    #[arg(long)]
    to: Option<String>,
    /// At most this many keys (1 to 10000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    worker: WorkerArgs,
}

pub async fn run(cmd: StateCommand) -> anyhow::Result<()> {
    match cmd {
        StateCommand::Get(a) => {
            let (body, from) = ask(&a.worker.worker, &["stores", &a.store, &a.key], &[]).await?;
            if from != a.worker.worker.origin() {
                eprintln!("(held by the worker at {})", from.ascii_serialization());
            }
            println!("{body}");
        }
        StateCommand::List(w) => {
            let (body, _) = ask(&w.worker, &["stores"], &[]).await?;
            let stores = body.as_array().cloned().unwrap_or_default();
            if stores.is_empty() {
                println!("the worker serves no stores");
            }
            for s in stores {
                println!(
                    "{}  (topology {}): {} -> {}, {} keys in partitions {} of {}",
                    s["name"].as_str().unwrap_or("?"),
                    s["topology"].as_str().unwrap_or("?"),
                    s["key"].as_str().unwrap_or("?"),
                    s["value"].as_str().unwrap_or("?"),
                    s["keys"],
                    s["partitions"],
                    s["topic"].as_str().unwrap_or("?"),
                );
            }
        }
        StateCommand::Range(a) => {
            let mut query = vec![("limit", a.limit.to_string())];
            query.extend(a.from.map(|f| ("from", f)));
            query.extend(a.to.map(|t| ("to", t)));
            let (body, _) = ask(&a.worker.worker, &["stores", &a.store], &query).await?;
            for e in body["entries"].as_array().into_iter().flatten() {
                println!("{e}");
            }
            if !body["next"].is_null() {
                let next = match &body["next"] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                };
                eprintln!("more from {next:?} (--from)");
            }
            for e in body["elsewhere"].as_array().into_iter().flatten() {
                eprintln!(
                    "partition {} is held by {}",
                    e["partition"],
                    e["address"].as_str().unwrap_or("no worker that says where")
                );
            }
        }
    }
    Ok(())
}

/// GETs `path` from `worker`, following redirects: the body, and the
/// origin that answered.
pub async fn ask(
    worker: &url::Url,
    path: &[&str],
    query: &[(&str, String)],
) -> anyhow::Result<(Value, url::Origin)> {
    let mut url = worker.clone();
    url.path_segments_mut()
        .map_err(|_| anyhow::anyhow!("--worker {worker} is not an http:// address"))?
        .pop_if_empty()
        .extend(path);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let r = reqwest::Client::new()
        .get(url.clone())
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the worker at {worker} (--worker): {e}"))?;
    let (status, from) = (r.status(), r.url().origin());
    let body: Value = r
        .json()
        .await
        .map_err(|e| anyhow::anyhow!("the worker at {worker} answered {status}, not JSON: {e}"))?;
    if !status.is_success() {
        let why = body["error"].as_str().map(str::to_string);
        anyhow::bail!("{} ({status})", why.unwrap_or_else(|| body.to_string()));
    }
    Ok((body, from))
}
