//! `executor-bench`: kiln's cold Debian 12 `pxe` build against the stock
//! tools making the same root file system, in one run, side by side.
//!
//! - kiln cold: `kiln-osbuild --export pxe` with an empty store (the
//!   package files are fetched from the local mirror into the store too);
//! - kiln rebuild: the unchanged manifest again, same store, new output;
//! - peer: `mmdebstrap --variant=custom` with exactly the depsolved package
//!   list from the same `file://` mirror, `INITRD=No` in its environment
//!   (as kiln's dpkg stage), the same dracut call as kiln's dracut stage in
//!   a customize hook, `--dpkgopt=force-unsafe-io` (as kiln's dpkg calls),
//!   then `mksquashfs TREE rootfs.squashfs -noappend -comp zstd`.
//!
//! The package files come from the shared apt cache
//! (`kiln_testsupport::aptcache`), warmed before anything is timed. The
//! binary re-executes itself as `kiln-osbuild` (`executor-bench
//! kiln-osbuild ARGS`) so that it needs no other binary.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "kiln's cold pxe build and rebuild against mmdebstrap + mksquashfs")]
struct Args {
    /// How many times to run each side (figures of every run are printed).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Where the stores, trees and outputs go (a temporary directory under
    /// /var/tmp by default; it must not be a tmpfs too small for ~1.5 GB).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Skip the peer (mmdebstrap + mksquashfs).
    #[arg(long)]
    no_peer: bool,
    /// Print the figures as JSON.
    #[arg(long)]
    json: bool,
    /// Keep each build's log here: kiln's progress records (JSON, with
    /// timestamps: where the time goes) and the peer's output.
    #[arg(long)]
    log_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(code) = kiln_executor::cli::stage_entry(&argv) {
        return code;
    }
    if argv.get(1).map(String::as_str) == Some("kiln-osbuild") {
        return kiln_executor::cli::main(argv[1..].to_vec());
    }
    match bench(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("executor-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The Debian 12 pxe image's manifest (no customizations) and its package
/// set, depsolved by kiln-depsolve against an apt-made local mirror.
struct Image {
    manifest: serde_json::Value,
    packages: Vec<String>,
    kver: String,
    mirror_line: String,
}

fn image(mirror: &Path) -> Result<Image> {
    let catalog = kiln_distro::Catalog::embedded()?;
    let distro = catalog.get("debian-12").context("no debian-12")?;
    let (arch, arch_def) = distro
        .find_architecture("x86_64")
        .context("no x86_64 for debian-12")?;
    let names = distro
        .packages(arch, "pxe")
        .context("no pxe image type for debian-12")?;
    let (repo, _) = kiln_testsupport::aptcache::debian_mirror(mirror, &names)
        .map_err(anyhow::Error::msg)
        .context("making the local mirror (apt-get download into the shared cache)")?;
    let cache = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let set = rt.block_on(kiln_depsolve::RepoSet::open(kiln_depsolve::RepoConfig {
        arch: arch_def.package_arch.clone(),
        sources: vec![repo.source_line().parse()?],
        cache_dir: cache.path().to_owned(),
        keyring: None,
    }))?;
    let solution = set.solve(&kiln_depsolve::Request {
        packages: names,
        essential: true,
        recommends: false,
    })?;
    let files: Vec<kiln_manifests::generate::PackageFile> = solution
        .packages
        .iter()
        .map(|p| kiln_manifests::generate::PackageFile {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.arch.clone(),
            url: p.url.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    let customizations = kiln_manifests::customize::ImageCustomizations::default();
    let manifest = kiln_manifests::generate::manifest(&kiln_manifests::generate::ImageRequest {
        family: distro.family,
        arch,
        image_type: "pxe",
        filename: "rootfs.squashfs",
        source_epoch: distro.source_epoch,
        packages: &files,
        customizations: &customizations,
    })?;
    let kver = files
        .iter()
        .filter_map(|p| p.name.strip_prefix("linux-image-"))
        .find(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        .context("no kernel in the set")?
        .to_owned();
    Ok(Image {
        manifest,
        packages: solution
            .packages
            .iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect(),
        kver,
        mirror_line: repo.source_line(),
    })
}

/// The dracut call of the manifest's dracut stage, for the peer's hook.
fn dracut_command(manifest: &serde_json::Value, kver: &str) -> Result<String> {
    let stage = manifest["pipelines"][0]["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["type"] == "org.osbuild.dracut"))
        .context("no dracut stage in the pxe manifest")?;
    let modules: Vec<&str> = stage["options"]["add_modules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str())
        .collect();
    let compress = stage["options"]["compress"].as_str().unwrap_or("zstd");
    Ok(format!(
        "dracut --force --no-hostonly --kver {kver} --add '{}' --compress {compress} \
         --no-early-microcode --reproducible /boot/initramfs-{kver}.img",
        modules.join(" ")
    ))
}

fn timed(what: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Duration> {
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: {cmd:?}"))?;
    let took = started.elapsed();
    if let Some(log) = log {
        let mut text = out.stdout.clone();
        text.extend_from_slice(&out.stderr);
        std::fs::write(log, text).with_context(|| format!("{}", log.display()))?;
    }
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn kiln(manifest: &Path, store: &Path, out: &Path, log: Option<PathBuf>) -> Result<Duration> {
    let exe = std::env::current_exe()?;
    let mut c = Command::new(exe);
    c.arg("kiln-osbuild");
    if log.is_some() {
        c.args(["--monitor", "JSONSeqMonitor", "--monitor-fd", "2"]);
    }
    timed(
        "kiln-osbuild",
        c.arg("--store")
            .arg(store)
            .arg("--output-directory")
            .arg(out)
            .args(["--export", "pxe"])
            .arg(manifest),
        log.as_deref(),
    )
}

fn peer(img: &Image, dracut: &str, dir: &Path, log: Option<PathBuf>) -> Result<Duration> {
    let tree = dir.join("tree");
    let squashfs = dir.join("rootfs.squashfs");
    let started = Instant::now();
    timed(
        "mmdebstrap",
        Command::new("mmdebstrap")
            .args(["--variant=custom", "--mode=root"])
            .arg(if log.is_some() {
                "--verbose"
            } else {
                "--quiet"
            })
            .arg("--dpkgopt=force-unsafe-io")
            // The file:// mirror bind-mounted into the chroot, where apt
            // and dpkg read the package files.
            .arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
            .arg(format!("--include={}", img.packages.join(",")))
            .arg(format!("--customize-hook=chroot \"$1\" {dracut}"))
            .arg("test")
            .arg(&tree)
            .arg(&img.mirror_line)
            .env("INITRD", "No"),
        log.as_deref(),
    )?;
    timed(
        "mksquashfs",
        Command::new("mksquashfs").arg(&tree).arg(&squashfs).args([
            "-noappend",
            "-comp",
            "zstd",
            "-quiet",
            "-no-progress",
        ]),
        None,
    )?;
    Ok(started.elapsed())
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn size(p: &Path) -> u64 {
    p.metadata().map(|m| m.len()).unwrap_or(0)
}

fn bench(args: Args) -> Result<()> {
    let base = match &args.work_dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir_in("/var/tmp")?,
    };
    eprintln!("executor-bench: warming the package cache and making the mirror");
    let img = image(&base.path().join("mirror"))?;
    let manifest = base.path().join("pxe.json");
    std::fs::write(&manifest, serde_json::to_vec(&img.manifest)?)?;
    let dracut = dracut_command(&img.manifest, &img.kver)?;
    eprintln!(
        "executor-bench: {} packages, kernel {}; load {}",
        img.packages.len(),
        img.kver,
        load()
    );
    let secs = |d: Duration| d.as_secs_f64();
    let mut rows = Vec::new();
    for run in 1..=args.runs {
        let dir = base.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&dir)?;
        let load_before = load();
        let store = dir.join("store");
        let log = |name: &str| {
            args.log_dir
                .as_ref()
                .map(|d| d.join(format!("run-{run}-{name}.log")))
        };
        if let Some(d) = &args.log_dir {
            std::fs::create_dir_all(d)?;
        }
        // The machine is shared: alternate which side goes first so that a
        // change of load does not always fall on the same side.
        let run_peer = || -> Result<(Option<Duration>, u64)> {
            if args.no_peer {
                return Ok((None, 0));
            }
            let pdir = dir.join("peer");
            std::fs::create_dir_all(&pdir)?;
            let t = peer(&img, &dracut, &pdir, log("peer"))?;
            let s = size(&pdir.join("rootfs.squashfs"));
            let _ = Command::new("rm").arg("-rf").arg(&pdir).status();
            eprintln!("run {run}: mmdebstrap + mksquashfs {:.1} s", secs(t));
            Ok((Some(t), s))
        };
        let run_kiln = || -> Result<(Duration, Duration, u64)> {
            let cold = kiln(&manifest, &store, &dir.join("out-cold"), log("kiln-cold"))?;
            eprintln!("run {run}: kiln cold {:.1} s", secs(cold));
            let rebuild = kiln(
                &manifest,
                &store,
                &dir.join("out-rebuild"),
                log("kiln-rebuild"),
            )?;
            let s = size(&dir.join("out-cold/pxe/rootfs.squashfs"));
            // Free the disk for the other side.
            let _ = Command::new("rm").arg("-rf").arg(&store).status();
            Ok((cold, rebuild, s))
        };
        let ((cold, rebuild, kiln_size), (peer_time, peer_size)) = if run % 2 == 1 {
            let k = run_kiln()?;
            (k, run_peer()?)
        } else {
            let p = run_peer()?;
            (run_kiln()?, p)
        };
        let _ = Command::new("rm").arg("-rf").arg(&dir).status();
        let row = serde_json::json!({
            "run": run,
            "kiln_cold_s": secs(cold),
            "kiln_rebuild_s": secs(rebuild),
            "peer_s": peer_time.map(secs),
            "ratio": peer_time.map(|p| secs(cold) / secs(p)),
            "kiln_squashfs_bytes": kiln_size,
            "peer_squashfs_bytes": peer_size,
            "load_before": load_before,
            "load_after": load(),
        });
        if !args.json {
            println!(
                "run {run}: kiln cold {:7.1} s | kiln rebuild {:5.2} s | mmdebstrap+mksquashfs {} | kiln/peer {} | squashfs {} / {} MiB | load {} -> {}",
                secs(cold),
                secs(rebuild),
                peer_time
                    .map(|p| format!("{:7.1} s", secs(p)))
                    .unwrap_or_else(|| "-".into()),
                peer_time
                    .map(|p| format!("{:.2}x (goal <= 0.80x)", secs(cold) / secs(p)))
                    .unwrap_or_else(|| "-".into()),
                kiln_size >> 20,
                peer_size >> 20,
                row["load_before"].as_str().unwrap_or(""),
                row["load_after"].as_str().unwrap_or(""),
            );
        }
        rows.push(row);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "packages": img.packages.len(),
                "kernel": img.kver,
                "runs": rows,
            }))?
        );
    }
    Ok(())
}
