//! Shared helpers for the integration tests: the host's real bookworm
//! indexes and an isolated `apt-get -s` run over exactly those indexes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kiln_depsolve::compression::decompress_to_string;
use kiln_depsolve::{IndexSource, PackageIndex};

pub(crate) const LISTS: &str = "/var/lib/apt/lists";

/// (sources.list line, list file) for bookworm main, updates and security.
pub(crate) fn bookworm_lists() -> Vec<(&'static str, &'static str, PathBuf)> {
    [
        (
            "deb http://deb.debian.org/debian bookworm main",
            "http://deb.debian.org/debian",
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages",
        ),
        (
            "deb http://deb.debian.org/debian bookworm-updates main",
            "http://deb.debian.org/debian",
            "deb.debian.org_debian_dists_bookworm-updates_main_binary-amd64_Packages",
        ),
        (
            "deb http://deb.debian.org/debian-security bookworm-security main",
            "http://deb.debian.org/debian-security",
            "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages",
        ),
    ]
    .into_iter()
    .map(|(line, base, stem)| {
        let path = ["", ".lz4", ".xz", ".gz"]
            .iter()
            .map(|ext| Path::new(LISTS).join(format!("{stem}{ext}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("{LISTS}/{stem}* is missing: run `apt-get update` on a bookworm host")
            });
        (line, base, path)
    })
    .collect()
}

pub(crate) fn host_bookworm_index() -> Arc<PackageIndex> {
    PackageIndex::build("amd64", &host_bookworm_sources()).unwrap()
}

/// The three bookworm Packages texts, decompressed, in apt's order.
pub(crate) fn host_bookworm_sources() -> Vec<IndexSource> {
    bookworm_lists()
        .into_iter()
        .map(|(_, base, path)| {
            let data = std::fs::read(&path).unwrap();
            let label = path.display().to_string();
            IndexSource {
                base_url: base.to_string(),
                text: decompress_to_string(&label, &data).unwrap(),
                label,
            }
        })
        .collect()
}

pub(crate) fn hpc_node_set() -> Vec<String> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/hpc-node.txt"))
            .unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Runs `apt-get -s install` with an empty dpkg status over exactly the
/// three bookworm indexes and returns name -> version of the `Inst` lines.
pub(crate) fn apt_simulate(names: &[String], recommends: bool) -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sources: String = bookworm_lists()
        .iter()
        .map(|(l, _, _)| format!("{l}\n"))
        .collect();
    std::fs::write(d.join("sources.list"), sources).unwrap();
    std::fs::write(d.join("status"), "").unwrap();
    for sub in ["parts", "prefs", "cache/archives/partial", "conf"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("conf/apt.conf"), "").unwrap();
    let p = |s: &str| d.join(s).display().to_string();
    let opts = [
        format!("Dir::Etc::SourceList={}", p("sources.list")),
        format!("Dir::Etc::SourceParts={}", p("parts")),
        format!("Dir::Etc::Preferences={}", p("prefs/none")),
        format!("Dir::Etc::PreferencesParts={}", p("prefs")),
        format!("Dir::Etc::Parts={}", p("conf")),
        format!("Dir::State::status={}", p("status")),
        format!("Dir::State::Lists={LISTS}"),
        format!("Dir::Cache={}", p("cache")),
        "Dir::Cache::pkgcache=".to_string(),
        "Dir::Cache::srcpkgcache=".to_string(),
        "APT::Architecture=amd64".to_string(),
        "APT::Architectures::=amd64".to_string(),
        format!("APT::Install-Recommends={}", if recommends { 1 } else { 0 }),
        "Debug::NoLocking=1".to_string(),
    ];
    let mut cmd = Command::new("apt-get");
    cmd.env("APT_CONFIG", p("conf/apt.conf"))
        .arg("-s")
        .arg("-q");
    for o in &opts {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("install").args(names);
    let out = cmd.output().expect("apt-get must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apt-get -s failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        stdout
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .map(|l| {
            let (name, rest) = l.split_once(" (").unwrap();
            let version = rest.split_whitespace().next().unwrap();
            (name.to_string(), version.to_string())
        })
        .collect()
}

pub(crate) mod deb_repo;
pub(crate) mod http;
