//! The worker's Prometheus metrics (`metrics_listen` in worker.toml: off
//! unless set; serve them on loopback): how long builds and each kind of
//! stage take, what uploads move and how long they take, and the size of
//! the executor's store. Names in osbuild-composer's `image_builder`
//! namespace, subsystem `worker`:
//!
//! - `image_builder_worker_build_duration_seconds{image_type,status}`
//! - `image_builder_worker_stage_duration_seconds{stage}`
//! - `image_builder_worker_upload_bytes_total{target}`
//! - `image_builder_worker_upload_duration_seconds{target,status}`
//! - `image_builder_worker_store_bytes`

use std::sync::LazyLock;

use prometheus::{
    CounterVec, Encoder, Gauge, HistogramOpts, HistogramVec, Opts, Registry, TextEncoder,
};

/// Seconds, from a fast stage to a long build.
const BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0,
    1800.0, 3600.0, 7200.0,
];

pub(crate) struct Metrics {
    registry: Registry,
    pub build_duration: HistogramVec,
    pub stage_duration: HistogramVec,
    pub upload_bytes: CounterVec,
    pub upload_duration: HistogramVec,
    pub store_bytes: Gauge,
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help)
        .namespace("image_builder")
        .subsystem("worker")
        .buckets(BUCKETS.to_vec());
    HistogramVec::new(opts, labels).expect("a valid histogram")
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
        .namespace("image_builder")
        .subsystem("worker")
}

/// This process's metrics (in-process workers of tests share them).
pub(crate) static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::new(),
        build_duration: histogram(
            "build_duration_seconds",
            "Duration of the executor's builds.",
            &["image_type", "status"],
        ),
        stage_duration: histogram(
            "stage_duration_seconds",
            "Duration of the stages the executor ran.",
            &["stage"],
        ),
        upload_bytes: CounterVec::new(
            opts("upload_bytes_total", "Bytes uploaded to targets."),
            &["target"],
        )
        .expect("a valid counter"),
        upload_duration: histogram(
            "upload_duration_seconds",
            "Duration of an image's upload to one target.",
            &["target", "status"],
        ),
        store_bytes: Gauge::with_opts(opts(
            "store_bytes",
            "Size of the executor's store after the last build.",
        ))
        .expect("a valid gauge"),
    };
    for c in [
        Box::new(m.build_duration.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(m.stage_duration.clone()),
        Box::new(m.upload_bytes.clone()),
        Box::new(m.upload_duration.clone()),
        Box::new(m.store_bytes.clone()),
    ] {
        m.registry.register(c).expect("metric names are unique");
    }
    m
});

/// The text exposition of the worker's metrics.
pub fn render() -> String {
    let mut out = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&METRICS.registry.gather(), &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    axum::serve(listener, app).await
}
