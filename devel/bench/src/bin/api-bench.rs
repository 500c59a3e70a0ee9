//! `GET /composes/{id}` under load: requests per second and p99 latency of
//! one composer (PostgreSQL, holding 1,000 composes) measured with `wrk`,
//! beside a minimal axum handler on the same machine in the same run (the
//! peer: what the HTTP stack alone does), and their ratio.
//!
//!   cargo run --release -p kiln-bench --bin api-bench [-- --seconds 10 --connections 64]
//!
//! Needs `wrk` (`apt-get install wrk`) and PostgreSQL's server binaries.

use std::process::Command;

use anyhow::{bail, Context};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use kiln_composer::{AppState, ComposerConfig};
use kiln_testsupport::PgCluster;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// Composes the composer holds.
    #[arg(long, default_value_t = 1000)]
    composes: usize,
    /// Length of each wrk run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    connections: u32,
}

/// What one wrk run measured.
struct Load {
    requests_per_sec: f64,
    p99_ms: f64,
    non_2xx: u64,
}

/// `wrk --latency` on `url`; its requests per second and 99th percentile.
fn wrk(url: &str, args: &Args) -> anyhow::Result<Load> {
    let out = Command::new("wrk")
        .args(["-t", "2", "-c", &args.connections.to_string()])
        .args(["-d", &format!("{}s", args.seconds), "--latency", url])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk: {}{}", text, String::from_utf8_lossy(&out.stderr));
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    let rps: f64 = field("Requests/sec:")
        .context("no Requests/sec in wrk's output")?
        .parse()?;
    let p99 = field("99%").context("no 99% latency in wrk's output")?;
    let non_2xx = field("Non-2xx or 3xx responses:")
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .unwrap_or(0);
    Ok(Load {
        requests_per_sec: rps,
        p99_ms: millis(&p99)?,
        non_2xx,
    })
}

/// wrk's `1.23ms`, `850.00us`, `1.20s` in milliseconds.
fn millis(v: &str) -> anyhow::Result<f64> {
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("unreadable latency {v:?}")
    };
    Ok(n.parse::<f64>()? * scale)
}

async fn serve(app: Router) -> anyhow::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pg = PgCluster::start(&[]).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let mut config = ComposerConfig {
        data_dir: dir.path().to_owned(),
        database_url: Some(pg.create_database().map_err(anyhow::Error::msg)?),
        ..Default::default()
    };
    // The composes stay as they were made: no job runs.
    config.jobs.run_in_composer = false;
    config.metrics.enabled = false;
    let state = AppState::open(config).await?;
    let app = kiln_composer::api::router(state);
    let addr = serve(app).await?;
    let api = format!("http://{addr}/api/image-builder-composer/v2");
    let http = reqwest::Client::new();
    let request = json!({
        "distribution": "debian-12",
        "image_request": {"architecture": "x86_64", "image_type": "tar",
                          "upload_targets": [{"type": "local", "upload_options": {}}]},
        "customizations": {"hostname": "node-001"},
    });
    let mut last = String::new();
    for _ in 0..args.composes {
        let r: Value = http
            .post(format!("{api}/compose"))
            .json(&request)
            .send()
            .await?
            .json()
            .await?;
        last = r["id"].as_str().context("no compose id")?.to_owned();
    }
    let url = format!("{api}/composes/{last}");
    let one: Value = http.get(&url).send().await?.json().await?;
    let body = one.to_string();

    // The peer: a handler that answers the same document from memory.
    let doc: Value = serde_json::from_str(&body)?;
    let peer = Router::new().route("/composes/x", get(move || async move { Json(doc.clone()) }));
    let peer_url = format!("http://{}/composes/x", serve(peer).await?);

    let kiln = wrk(&url, &args)?;
    let axum = wrk(&peer_url, &args)?;
    if kiln.non_2xx + axum.non_2xx > 0 {
        bail!(
            "errors under load: kiln {}, peer {}",
            kiln.non_2xx,
            axum.non_2xx
        );
    }
    println!(
        "GET /composes/{{id}} ({} composes held, PostgreSQL, {}-byte answer; wrk -t2 -c{} -d{}s)",
        args.composes,
        body.len(),
        args.connections,
        args.seconds
    );
    println!(
        "  kiln-composer:        {:>9.0} req/s  p99 {:>6.2} ms",
        kiln.requests_per_sec, kiln.p99_ms
    );
    println!(
        "  minimal axum handler: {:>9.0} req/s  p99 {:>6.2} ms",
        axum.requests_per_sec, axum.p99_ms
    );
    println!(
        "  ratio kiln/peer: {:.2}x req/s, {:.2}x p99 (goal: >= 10000 req/s, p99 <= 10 ms)",
        kiln.requests_per_sec / axum.requests_per_sec,
        kiln.p99_ms / axum.p99_ms
    );
    Ok(())
}
