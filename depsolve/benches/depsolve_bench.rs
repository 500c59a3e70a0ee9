//! Benchmark on the host's real bookworm indexes (main, updates, security):
//! kiln cold and warm, `apt-get -s` with an empty dpkg status, and libsolv
//! through python3-solv, side by side, plus kiln's resident memory.
//!
//! Run: `cargo run --release -p kiln-depsolve --bin depsolve-bench`

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use kiln_depsolve::{request_names, solve, Request};

const SET_A: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "linux-image-amd64",
    "openssh-server",
    "iproute2",
    "nfs-common",
    "chrony",
    "sudo",
    "less",
    "vim-tiny",
];

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    // Cold: compressed lists on disk -> decompress, parse, index.
    let mut cold = Vec::new();
    let mut index = None;
    for _ in 0..5 {
        let t = Instant::now();
        let i = common::host_bookworm_index();
        cold.push(t.elapsed());
        index = Some(i);
    }
    let Some(index) = index else { return };
    cold.sort();
    let t = Instant::now();
    let sources = common::host_bookworm_sources();
    let t_decompress = t.elapsed();
    let t = Instant::now();
    drop(kiln_depsolve::PackageIndex::build("amd64", &sources));
    let t_build = t.elapsed();
    drop(sources);
    // Cold from the disk cache, as RepoSet::open does on a restart: read
    // and hash the cached index files (the checksum check), then load the
    // index snapshot keyed by those hashes.
    let snap_dir = tempfile::tempdir().expect("temp dir");
    let snap = snap_dir.path().join("bookworm.kidx");
    kiln_depsolve::snapshot::write(&index, &snap).expect("write snapshot");
    let snap_size = std::fs::metadata(&snap).map(|m| m.len()).unwrap_or(0);
    let mut cold_cached = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        for (_, _, path) in common::bookworm_lists() {
            let data = std::fs::read(&path).expect("read list");
            std::hint::black_box(kiln_depsolve::fetch::sha256_hex(&data));
        }
        let loaded = kiln_depsolve::snapshot::read(&snap).expect("snapshot");
        cold_cached.push(t.elapsed());
        drop(loaded);
    }
    cold_cached.sort();
    let (rss, peak) = rss_mib();

    // Plain Packages files for libsolv.
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut plain = Vec::new();
    for (i, (_, _, path)) in common::bookworm_lists().iter().enumerate() {
        let data = std::fs::read(path).expect("read list");
        let text =
            kiln_depsolve::compression::decompress_to_string(&path.display().to_string(), &data)
                .expect("decompress");
        let p = tmp.path().join(format!("Packages{i}"));
        std::fs::write(&p, text).expect("write");
        plain.push(p);
    }

    println!(
        "kiln depsolve benchmark: bookworm main + updates + security (amd64), {} packages",
        index.packages().len()
    );
    println!(
        "kiln first load (read+decompress+parse+index lists): p50 {:.1} ms, min {:.1} ms",
        ms(percentile(&cold, 0.5)),
        ms(cold[0])
    );
    println!(
        "  of which read+decompress {:.1} ms, parse+index {:.1} ms",
        ms(t_decompress),
        ms(t_build)
    );
    println!(
        "kiln cold from the disk cache (hash cached files + load {} MiB snapshot): p50 {:.1} ms, min {:.1} ms",
        snap_size >> 20,
        ms(percentile(&cold_cached, 0.5)),
        ms(cold_cached[0])
    );
    println!(
        "kiln resident memory with the three indexes loaded: {rss:.0} MiB (peak {peak:.0} MiB)"
    );
    println!();
    println!(
        "{:<28} {:>6} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "set", "pkgs", "kiln p50", "kiln p99", "apt-get -s", "libsolv solve", "libsolv load"
    );

    let sets = [
        (
            "(a) base + essential",
            SET_A.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ),
        ("(b) hpc-node + essential", common::hpc_node_set()),
    ];
    for (label, packages) in sets {
        let req = Request {
            packages,
            essential: true,
            recommends: false,
        };
        let mut warm = Vec::new();
        let mut count = 0;
        for _ in 0..300 {
            let t = Instant::now();
            let sol = solve(&index, &req).expect("solvable");
            warm.push(t.elapsed());
            count = sol.packages.len();
        }
        warm.sort();
        let names = request_names(&index, &req);

        let mut apt = Vec::new();
        let mut apt_count = 0;
        for _ in 0..3 {
            let t = Instant::now();
            apt_count = common::apt_simulate(&names, false).len();
            apt.push(t.elapsed());
        }
        apt.sort();

        let out = Command::new("/usr/bin/python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/libsolv_bench.py"
            ))
            .args(&plain)
            .arg("--")
            .args(&names)
            .output();
        let (solv_solve, solv_load, solv_count) = match out {
            Ok(o) if o.status.success() => {
                let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
                (
                    format!("{:.1} ms", v["solve_ms"].as_f64().unwrap_or(f64::NAN)),
                    format!("{:.0} ms", v["load_ms"].as_f64().unwrap_or(f64::NAN)),
                    v["packages"].as_array().map_or(0, |a| a.len()),
                )
            }
            Ok(o) => (
                format!("failed: {}", String::from_utf8_lossy(&o.stdout).trim()),
                String::new(),
                0,
            ),
            Err(e) => (format!("no python3-solv: {e}"), String::new(), 0),
        };
        println!(
            "{:<28} {:>6} {:>9.3} ms {:>9.3} ms {:>9.0} ms {:>14} {:>14}",
            label,
            count,
            ms(percentile(&warm, 0.5)),
            ms(percentile(&warm, 0.99)),
            ms(apt[1]),
            solv_solve,
            solv_load
        );
        println!(
            "{:<28} apt-get installs {apt_count}, libsolv {solv_count}",
            ""
        );
    }
    let unique: BTreeSet<&str> = index
        .packages()
        .iter()
        .map(|p| index.name(p.name))
        .collect();
    println!("\n{} package names; kiln cold excludes process start, apt-get and libsolv include their own index loading (libsolv's shown apart).", unique.len());
}
