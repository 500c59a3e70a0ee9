//! Upload throughput of kiln's S3 target against boto3's, on the same
//! s3s-fs server on loopback, with the same part size and concurrency.
//!
//! `cargo run --release -p kiln-bench --bin upload-bench [-- SIZE_MIB PART_MIB CONCURRENCY ROUNDS]`
//! (defaults: 1024 MiB, 16 MiB parts, 4 in flight, 2 rounds). The rounds
//! alternate kiln and boto3 so that neither gets the quieter moment of a
//! shared machine; the best round of each is compared. boto3 runs from the
//! virtualenv `tools/test.sh` makes in the kiln tools directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use kiln_targets::{upload, RetryPolicy, S3Target, Secret, TargetConfig};
use kiln_testsupport::storage::{tools_dir, S3Server};
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

/// Times boto3's `upload_file` alone (not the interpreter's start) and
/// prints the seconds it took.
const BOTO3: &str = r#"
import sys, time, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, key_id, secret, bucket, path, name, part, conc = sys.argv[1:9]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  aws_access_key_id=key_id, aws_secret_access_key=secret,
                  config=Config(s3={"addressing_style": "path"},
                                max_pool_connections=int(conc) + 2))
tc = TransferConfig(multipart_threshold=int(part), multipart_chunksize=int(part),
                    max_concurrency=int(conc), use_threads=True)
start, cpu = time.perf_counter(), time.process_time()
s3.upload_file(path, bucket, name, Config=tc)
print(time.perf_counter() - start, time.process_time() - cpu)
"#;

fn main() {
    if let Err(e) = run() {
        eprintln!("upload-bench: {e}");
        std::process::exit(1);
    }
}

fn arg(n: usize, default: u64) -> Result<u64, String> {
    match std::env::args().nth(n) {
        Some(v) => v.parse().map_err(|e| format!("argument {n} ({v:?}): {e}")),
        None => Ok(default),
    }
}

fn run() -> Result<(), String> {
    let size_mib = arg(1, 1024)?;
    let part_mib = arg(2, 16)?;
    let concurrency = arg(3, 4)? as usize;
    let rounds = arg(4, 2)?.max(1);
    let python = tools_dir().join("venv/bin/python");
    if !python.is_file() {
        return Err(format!(
            "{} is missing: run tools/test.sh, which makes it with boto3",
            python.display()
        ));
    }
    println!("load average at start: {}", loadavg());

    let server = S3Server::start("bench")?;
    let work = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let artifact = work.path().join("artifact.raw");
    let sha256 = make_artifact(&artifact, size_mib * MIB)?;
    let target = TargetConfig::S3(S3Target {
        endpoint: server.endpoint(),
        region: "us-east-1".into(),
        bucket: server.bucket.clone(),
        access_key_id: server.access_key_id.clone(),
        secret_access_key: Secret::new(server.secret_access_key.clone()),
        path_style: true,
        part_size: part_mib * MIB,
        concurrency,
        retry: RetryPolicy::default(),
    });
    println!(
        "{size_mib} MiB artifact, {part_mib} MiB parts, {concurrency} in flight, s3s-fs on {}",
        server.endpoint()
    );

    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    let (mut best_kiln, mut best_boto) = (f64::MAX, f64::MAX);
    for round in 1..=rounds {
        let (start, cpu) = (Instant::now(), cpu_seconds());
        let got = runtime
            .block_on(upload(&target, &artifact, "kiln.raw", |_, _| {}))
            .map_err(|e| format!("kiln upload: {e}"))?;
        let kiln = start.elapsed().as_secs_f64();
        let kiln_cpu = cpu_seconds() - cpu;
        if got.sha256 != sha256 || got.size != size_mib * MIB {
            return Err("kiln reported another size or digest than the artifact's".into());
        }
        check_stored(&server, "kiln.raw", size_mib * MIB)?;

        let (boto, boto_cpu) = boto3(&python, &server, &artifact, part_mib * MIB, concurrency)?;
        check_stored(&server, "boto3.raw", size_mib * MIB)?;
        println!(
            "round {round}: kiln {:.1} MiB/s ({kiln:.2} s, {kiln_cpu:.2} s CPU), \
             boto3 {:.1} MiB/s ({boto:.2} s, {boto_cpu:.2} s CPU)",
            size_mib as f64 / kiln,
            size_mib as f64 / boto
        );
        best_kiln = best_kiln.min(kiln);
        best_boto = best_boto.min(boto);
        // Keep the disk from holding every round's copies.
        for name in ["kiln.raw", "boto3.raw"] {
            let _ = std::fs::remove_file(server.object_path(name));
        }
    }
    let (kiln_rate, boto_rate) = (size_mib as f64 / best_kiln, size_mib as f64 / best_boto);
    println!(
        "best: kiln {kiln_rate:.1} MiB/s, boto3 {boto_rate:.1} MiB/s, kiln/boto3 = {:.2}",
        kiln_rate / boto_rate
    );
    println!("load average at end: {}", loadavg());
    Ok(())
}

fn boto3(
    python: &Path,
    server: &S3Server,
    artifact: &Path,
    part: u64,
    concurrency: usize,
) -> Result<(f64, f64), String> {
    let out = Command::new(python)
        .arg("-c")
        .arg(BOTO3)
        .arg(server.endpoint())
        .arg(&server.access_key_id)
        .arg(&server.secret_access_key)
        .arg(&server.bucket)
        .arg(artifact)
        .arg("boto3.raw")
        .arg(part.to_string())
        .arg(concurrency.to_string())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "boto3 upload failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(wall)), Some(Ok(cpu))) => Ok((wall, cpu)),
        _ => Err(format!("boto3's timing: {text:?}")),
    }
}

/// User and system CPU time of this process (all threads), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<f64>() / 100.0
}

fn check_stored(server: &S3Server, name: &str, size: u64) -> Result<(), String> {
    let path: PathBuf = server.object_path(name);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() != size {
        return Err(format!("{name} is {} bytes, not {size}", meta.len()));
    }
    Ok(())
}

/// Writes `size` pseudo-random bytes (incompressible, cheap to make) and
/// returns their SHA-256.
fn make_artifact(path: &Path, size: u64) -> Result<String, String> {
    let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for chunk in buf.chunks_exact_mut(8) {
            // xorshift64*: good enough to defeat any compression.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        hasher.update(&buf);
        file.write_all(&buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.sync_all()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
