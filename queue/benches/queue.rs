//! Queue benchmark: round trips per second (enqueue + dequeue + finish) with
//! 1, 4 and 16 concurrent dequeuers, and the wake-up latency from enqueue to a
//! waiting dequeuer holding the job, for SQLite and PostgreSQL in one run.
//!
//! `cargo bench -p kiln-queue --bench queue` (set KILN_BENCH_SECS to change the
//! measuring time per figure, default 3).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_queue::{DequeueFilter, JobQueue, NewJob, Outcome};
use kiln_testsupport::PgCluster;
use serde_json::json;

const CONCURRENCY: [usize; 3] = [1, 4, 16];
const WAKE_SAMPLES: usize = 300;

struct Figures {
    name: String,
    rates: Vec<f64>,
    wake_p50: Duration,
    wake_p99: Duration,
}

async fn round_trips(q: Arc<dyn JobQueue>, dequeuers: usize, secs: f64) -> f64 {
    let job_type = format!("bench-{dequeuers}");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..dequeuers {
        let (q, stop, count, job_type) = (q.clone(), stop.clone(), count.clone(), job_type.clone());
        tasks.push(tokio::spawn(async move {
            let filter = DequeueFilter::types(&[&job_type]);
            let worker = format!("bench{w}");
            while !stop.load(Ordering::Relaxed) {
                q.enqueue(&[NewJob::new(&job_type, "x86_64", "bench", json!({"n": w}))])
                    .await
                    .expect("enqueue");
                if let Some(l) = q
                    .dequeue(&filter, &worker, Duration::from_secs(1))
                    .await
                    .expect("dequeue")
                {
                    q.finish(l.token, Outcome::Success(json!(null)))
                        .await
                        .expect("finish");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Warm up, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = count.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let done = count.load(Ordering::Relaxed) - start_count;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("bench task");
    }
    done as f64 / elapsed
}

async fn wake_latency(q: Arc<dyn JobQueue>) -> (Duration, Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Instant>(1);
    let waiter = {
        let q = q.clone();
        tokio::spawn(async move {
            let filter = DequeueFilter::types(&["bench-wake"]);
            for _ in 0..WAKE_SAMPLES {
                let l = q
                    .dequeue(&filter, "waiter", Duration::from_secs(30))
                    .await
                    .expect("dequeue")
                    .expect("the waiter was not woken within 30 s");
                let got = Instant::now();
                q.finish(l.token, Outcome::Success(json!(null)))
                    .await
                    .expect("finish");
                tx.send(got).await.expect("report");
            }
        })
    };
    let mut samples = Vec::with_capacity(WAKE_SAMPLES);
    for _ in 0..WAKE_SAMPLES {
        // Let the waiter go back to sleep before the next job.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let t0 = Instant::now();
        q.enqueue(&[NewJob::new("bench-wake", "x86_64", "bench", json!({}))])
            .await
            .expect("enqueue");
        let got = rx.recv().await.expect("waiter report");
        samples.push(got - t0);
    }
    waiter.await.expect("waiter");
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    )
}

async fn measure(name: &str, q: Arc<dyn JobQueue>, secs: f64) -> Figures {
    let mut rates = Vec::new();
    for c in CONCURRENCY {
        rates.push(round_trips(q.clone(), c, secs).await);
    }
    let (wake_p50, wake_p99) = wake_latency(q).await;
    Figures {
        name: name.into(),
        rates,
        wake_p50,
        wake_p99,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let secs: f64 = std::env::var("KILN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let mut all = Vec::new();

    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = kiln_queue::connect(&format!("sqlite:{}", dir.path().join("bench.db").display()))
        .await
        .expect("sqlite queue");
    all.push(measure("sqlite (WAL, synchronous=NORMAL)", sqlite, secs).await);

    let fast = PgCluster::start(&[("synchronous_commit", "off")]).expect("postgres cluster");
    let pg = kiln_queue::connect(&fast.create_database().expect("database"))
        .await
        .expect("pg queue");
    all.push(measure("postgres (synchronous_commit=off)", pg, secs).await);
    let url = fast.create_database().expect("database");
    let name = url.rsplit('/').next().expect("database name");
    let pg = kiln_queue::connect(&fast.socket_url(name))
        .await
        .expect("pg queue over the socket");
    all.push(measure("postgres (unix socket, sync. commit off)", pg, secs).await);
    drop(fast);

    let durable = PgCluster::start(&[]).expect("postgres cluster");
    let pg = kiln_queue::connect(&durable.create_database().expect("database"))
        .await
        .expect("pg queue");
    all.push(measure("postgres (durable commits)", pg, secs).await);
    drop(durable);

    println!();
    println!(
        "queue round trips per second (enqueue + dequeue + finish), {secs} s each, {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "{:<42} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "backend", "1 dequeuer", "4 dequeuers", "16 dequeuers", "wake p50", "wake p99"
    );
    for f in &all {
        println!(
            "{:<42} {:>12.0} {:>12.0} {:>12.0} {:>12} {:>12}",
            f.name,
            f.rates[0],
            f.rates[1],
            f.rates[2],
            ms(f.wake_p50),
            ms(f.wake_p99)
        );
    }
    println!("goal (postgres): >= 5000 round trips/s, wake p99 <= 20 ms");
}
