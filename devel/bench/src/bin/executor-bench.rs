//! `executor-bench`: kiln's cold Debian 12 `pxe` build against the stock
//! tools making the same root file system, in one run, side by side.
//!
//! - kiln cold: `kiln-osbuild --export pxe` with an empty store (the
//!   package files are fetched from the local mirror into the store too);
//! - kiln rebuild: the unchanged manifest again, same store, new output;
//! - peer, one step after the other: `mmdebstrap --variant=custom` with
//!   exactly the depsolved package list from the same `file://` mirror,
//!   `INITRD=No` in its environment (as kiln's dpkg stage), the same dracut
//!   call as kiln's dracut stage in a customize hook,
//!   `--dpkgopt=force-unsafe-io` (as kiln's dpkg calls), then
//!   `mksquashfs TREE rootfs.squashfs -noappend -comp zstd` leaving out
//!   what is in /boot, as kiln's lean `pxe` root does (kiln makes the
//!   initramfs and the squashfs at the same time). The size of the same
//!   squashfs with /boot (kiln's root before it was lean) is measured
//!   untimed.
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
use kiln_testsupport::builduser;

#[derive(Parser)]
#[command(about = "kiln's cold pxe build and rebuild against mmdebstrap + mksquashfs")]
struct Args {
    /// How many times to run each side (figures of every run are printed).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Where the stores, trees and outputs go (a temporary directory under
    /// /var/tmp by default; it needs about 3.5 GB free).
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
    let files = kiln_testsupport::package_files(&solution);
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

/// The manifest's dracut stage (`kiln.dracut` in its own pipeline).
fn dracut_stage(manifest: &serde_json::Value) -> Option<&serde_json::Value> {
    manifest["pipelines"]
        .as_array()?
        .iter()
        .filter_map(|p| p["stages"].as_array())
        .flatten()
        .find(|s| s["type"] == "kiln.dracut" || s["type"] == "org.osbuild.dracut")
}

/// What kiln's lean root file system leaves out (mksquashfs `-regex -e`).
fn squashfs_excludes(manifest: &serde_json::Value) -> Vec<String> {
    manifest["pipelines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["stages"].as_array())
        .flatten()
        .find(|s| s["type"] == "org.osbuild.squashfs")
        .and_then(|s| s["options"]["exclude_paths"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str().map(str::to_owned))
        .collect()
}

/// The dracut call of the manifest's dracut stage, for the peer's hook.
fn dracut_command(manifest: &serde_json::Value, kver: &str) -> Result<String> {
    let stage = dracut_stage(manifest).context("no dracut stage in the pxe manifest")?;
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

/// Wall time and CPU time (user + system, of the command and every process
/// it started) of one command.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
        }
    }
}

/// A cgroup of its own for one measured command, so that its CPU time
/// includes every descendant: getrusage does not count the processes
/// bubblewrap starts in a new pid namespace (a CPU-bound command under
/// `bwrap --unshare-pid` shows 0 s). cgroup v1's cpuacct hierarchy or a
/// pure cgroup v2 mount; without either the CPU figure falls back to
/// getrusage and misses kiln's stages (the bench says so when it starts).
struct CpuGroup {
    dir: PathBuf,
    v2: bool,
    procs: std::fs::File,
}

impl CpuGroup {
    fn new() -> Option<CpuGroup> {
        let (root, v2) = if Path::new("/sys/fs/cgroup/cpuacct/cpuacct.usage").exists() {
            (PathBuf::from("/sys/fs/cgroup/cpuacct"), false)
        } else if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            (PathBuf::from("/sys/fs/cgroup"), true)
        } else {
            return None;
        };
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = root.join(format!("kiln-executor-bench-{}-{n}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        match std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("cgroup.procs"))
        {
            Ok(procs) => Some(CpuGroup { dir, v2, procs }),
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Makes `cmd`'s process join the group before it runs anything.
    fn enter(&self, cmd: &mut Command) {
        use std::os::unix::io::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = self.procs.as_raw_fd();
        // SAFETY: only write(2) runs between fork and exec; "0" names the
        // writing process itself.
        unsafe {
            cmd.pre_exec(move || {
                if libc::write(fd, b"0\n".as_ptr().cast(), 2) == 2 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }

    fn usage(&self) -> Option<Duration> {
        if self.v2 {
            let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
            let usec = stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))?
                .trim()
                .parse()
                .ok()?;
            Some(Duration::from_micros(usec))
        } else {
            let ns = std::fs::read_to_string(self.dir.join("cpuacct.usage")).ok()?;
            Some(Duration::from_nanos(ns.trim().parse().ok()?))
        }
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // The processes a sandbox's pid namespace took down with it may
        // still be exiting for a moment after the command was waited for.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("executor-bench: {} stays (not empty)", self.dir.display());
    }
}

/// CPU time of this process's waited-for descendants so far.
fn children_cpu() -> Duration {
    // SAFETY: rusage is plain integers, for which all zeroes is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn timed(what: &str, cmd: &mut Command, log: Option<&Path>) -> Result<Cost> {
    // Both sides start with nothing left to write back from the one before.
    let _ = Command::new("sync").status();
    let group = CpuGroup::new();
    if let Some(g) = &group {
        g.enter(cmd);
    }
    let cpu_before = children_cpu();
    let started = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: {cmd:?}"))?;
    let wall = started.elapsed();
    let cpu = group
        .as_ref()
        .and_then(CpuGroup::usage)
        .unwrap_or_else(|| children_cpu().saturating_sub(cpu_before));
    let took = Cost { wall, cpu };
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

fn kiln(manifest: &Path, store: &Path, out: &Path, log: Option<PathBuf>) -> Result<Cost> {
    let exe = std::env::current_exe()?;
    // kiln-osbuild refuses root: as root, the bench runs it as the build
    // user (tools/build-user.sh), as a worker would.
    let mut c = Command::new(builduser::binary(&exe.to_string_lossy()));
    builduser::run_as(&mut c);
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

/// The peer's two steps, each timed on its own.
struct PeerCost {
    mmdebstrap: Cost,
    mksquashfs: Cost,
    /// The peer's root squashed with /boot (untimed).
    with_boot_bytes: u64,
}

/// The peer runs without privileges too, as kiln does: `mmdebstrap
/// --mode=unshare` as the build user, then mksquashfs in a user namespace
/// of the same subordinate ids (util-linux `unshare --map-users`), so the
/// tree's owners are read as they are meant.
fn peer(
    img: &Image,
    dracut: &str,
    excludes: &[String],
    dir: &Path,
    log: Option<PathBuf>,
) -> Result<PeerCost> {
    let tree = dir.join("tree");
    let out = dir.join("squashfs");
    let squashfs = out.join("rootfs.squashfs");
    let user = builduser::user();
    let first = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|t| kiln_executor::userns::subordinate(&t, &user.name, user.uid))
            .with_context(|| format!("the build user's subordinate ids in {file}"))
    };
    let (subuid, subgid) = (first("/etc/subuid")?, first("/etc/subgid")?);
    std::fs::create_dir_all(&out)?;
    // Written by the namespace's root.
    std::os::unix::fs::chown(&out, Some(subuid), Some(subgid))?;
    let mut mmdebstrap_cmd = Command::new("mmdebstrap");
    builduser::run_as(&mut mmdebstrap_cmd);
    let mmdebstrap = timed(
        "mmdebstrap",
        mmdebstrap_cmd
            .args(["--variant=custom", "--mode=unshare"])
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
    // mksquashfs as the namespace's root, over the tree, into `to`.
    let squash = |to: &Path, excludes: &[String]| {
        let mut c = Command::new("unshare");
        builduser::run_as(&mut c);
        c.arg(format!(
            "--map-users={subuid},0,{}",
            kiln_executor::userns::IDS
        ))
        .arg(format!(
            "--map-groups={subgid},0,{}",
            kiln_executor::userns::IDS
        ))
        .args(["--setuid", "0", "--setgid", "0", "mksquashfs"])
        .arg(&tree)
        .arg(to)
        .args(["-noappend", "-comp", "zstd", "-quiet", "-no-progress"]);
        if !excludes.is_empty() {
            c.arg("-regex").arg("-e").args(excludes);
        }
        c
    };
    let mksquashfs = timed("mksquashfs", &mut squash(&squashfs, excludes), None)?;
    // Untimed: the same root with /boot, as kiln's was before it was lean.
    let with_boot = out.join("with-boot.squashfs");
    timed(
        "mksquashfs (with /boot)",
        &mut squash(&with_boot, &[]),
        None,
    )?;
    let with_boot_bytes = size(&with_boot);
    std::fs::remove_file(&with_boot)?;
    Ok(PeerCost {
        mmdebstrap,
        mksquashfs,
        with_boot_bytes,
    })
}

/// The command dracut pipes its cpio archive through for `--compress X`
/// (dracut(8) documents `--compress=zstd` as `zstd -15 -q -T0`).
fn dracut_compressor(manifest: &serde_json::Value) -> Result<&'static str> {
    let compress = dracut_stage(manifest)
        .and_then(|s| s["options"]["compress"].as_str())
        .unwrap_or("zstd");
    match compress {
        "zstd" => Ok("zstd -15 -q -T0"),
        other => bail!("no known dracut compressor command for --compress {other}"),
    }
}

/// The initrd's compression on its own: kiln's initrd decompressed (not
/// timed), then compressed again as dracut does it (timed), so that the
/// compressors' share of a build can be told apart from the rest.
fn initrd_compression(initrd: &Path, compressor: &str, dir: &Path) -> Result<Cost> {
    let cpio = dir.join("initrd.cpio");
    let status = Command::new("zstd")
        .args(["-q", "-d", "-f", "-o"])
        .arg(&cpio)
        .arg(initrd)
        .status()
        .context("zstd -d")?;
    if !status.success() {
        bail!("zstd -d {}: {status}", initrd.display());
    }
    let cost = timed(
        compressor,
        Command::new("sh")
            .arg("-c")
            .arg(format!("{compressor} < \"$1\" > /dev/null"))
            .arg("sh")
            .arg(&cpio),
        None,
    )?;
    std::fs::remove_file(&cpio)?;
    Ok(cost)
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
    let excludes = squashfs_excludes(&img.manifest);
    eprintln!(
        "executor-bench: {} packages, kernel {}; load {}",
        img.packages.len(),
        img.kver,
        load()
    );
    let compressor = dracut_compressor(&img.manifest)?;
    if CpuGroup::new().is_none() {
        eprintln!(
            "executor-bench: no cgroup to count CPU time in (cgroup v1 cpuacct or v2): \
             kiln's CPU figures will miss its sandboxed stages"
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let secs = |d: Duration| d.as_secs_f64();
    let mut rows = Vec::new();
    builduser::give(base.path());
    for run in 1..=args.runs {
        let dir = base.path().join(format!("run-{run}"));
        std::fs::create_dir_all(&dir)?;
        builduser::give(&dir);
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
        let run_peer = || -> Result<(Option<PeerCost>, u64)> {
            if args.no_peer {
                return Ok((None, 0));
            }
            let pdir = dir.join("peer");
            std::fs::create_dir_all(&pdir)?;
            builduser::give(&pdir);
            let p = peer(&img, &dracut, &excludes, &pdir, log("peer"))?;
            let s = size(&pdir.join("squashfs/rootfs.squashfs"));
            eprintln!(
                "run {run}: mmdebstrap + mksquashfs {:.1} s",
                secs((p.mmdebstrap + p.mksquashfs).wall)
            );
            Ok((Some(p), s))
        };
        let run_kiln = || -> Result<(Cost, Cost, u64)> {
            let cold = kiln(&manifest, &store, &dir.join("out-cold"), log("kiln-cold"))?;
            eprintln!("run {run}: kiln cold {:.1} s", secs(cold.wall));
            let rebuild = kiln(
                &manifest,
                &store,
                &dir.join("out-rebuild"),
                log("kiln-rebuild"),
            )?;
            let s = size(&dir.join("out-cold/pxe/rootfs.squashfs"));
            Ok((cold, rebuild, s))
        };
        let ((cold, rebuild, kiln_size), (peer_cost, peer_size)) = if run % 2 == 1 {
            let k = run_kiln()?;
            (k, run_peer()?)
        } else {
            let p = run_peer()?;
            (run_kiln()?, p)
        };
        let load_after = load();
        // Untimed by the two sides: the initrd's compression alone, for the
        // compressors' share of the peer's time.
        let initrd = initrd_compression(&dir.join("out-cold/pxe/initrd.img"), compressor, &dir)?;
        // Removed only now (about 3 GB): a large tree deleted just before
        // a side starts slowed that side's first writes by seconds.
        let _ = Command::new("rm").arg("-rf").arg(&dir).status();
        let peer_total = peer_cost.as_ref().map(|p| p.mmdebstrap + p.mksquashfs);
        let compression_cpu = peer_cost.as_ref().map(|p| p.mksquashfs.cpu + initrd.cpu);
        // The shortest wall time a CPU-bound amount of work can take here.
        let on_cpus = |cpu: Duration| secs(cpu) / cpus as f64;
        let row = serde_json::json!({
            "run": run,
            "cpus": cpus,
            "kiln_cold_s": secs(cold.wall),
            "kiln_cold_cpu_s": secs(cold.cpu),
            "kiln_rebuild_s": secs(rebuild.wall),
            "peer_s": peer_total.map(|p| secs(p.wall)),
            "peer_cpu_s": peer_total.map(|p| secs(p.cpu)),
            "peer_mmdebstrap_s": peer_cost.as_ref().map(|p| secs(p.mmdebstrap.wall)),
            "peer_mksquashfs_s": peer_cost.as_ref().map(|p| secs(p.mksquashfs.wall)),
            "peer_mksquashfs_cpu_s": peer_cost.as_ref().map(|p| secs(p.mksquashfs.cpu)),
            "initrd_compression_s": secs(initrd.wall),
            "initrd_compression_cpu_s": secs(initrd.cpu),
            "ratio": peer_total.map(|p| secs(cold.wall) / secs(p.wall)),
            "kiln_cpu_floor_ratio": peer_total.map(|p| on_cpus(cold.cpu) / secs(p.wall)),
            "compression_floor_ratio": peer_total
                .zip(compression_cpu)
                .map(|(p, c)| on_cpus(c) / secs(p.wall)),
            "kiln_over_own_cpu_floor": secs(cold.wall) / on_cpus(cold.cpu),
            "kiln_squashfs_bytes": kiln_size,
            "peer_squashfs_bytes": peer_size,
            "squashfs_with_boot_bytes": peer_cost.as_ref().map(|p| p.with_boot_bytes),
            "load_before": load_before,
            "load_after": load_after,
        });
        if !args.json {
            println!("run {run} (load {load_before} -> {load_after}, {cpus} CPUs)");
            println!(
                "  kiln cold               {:7.1} s wall {:7.1} s CPU",
                secs(cold.wall),
                secs(cold.cpu)
            );
            println!(
                "  kiln rebuild            {:7.2} s wall (goal <= 2 s)",
                secs(rebuild.wall)
            );
            if let (Some(p), Some(total), Some(comp)) = (&peer_cost, peer_total, compression_cpu) {
                println!(
                    "  mmdebstrap+mksquashfs   {:7.1} s wall {:7.1} s CPU (mmdebstrap {:.1} s, mksquashfs {:.1} s)",
                    secs(total.wall),
                    secs(total.cpu),
                    secs(p.mmdebstrap.wall),
                    secs(p.mksquashfs.wall)
                );
                println!(
                    "  kiln/peer               {:7.2}x (goal <= 0.80x)",
                    secs(cold.wall) / secs(total.wall)
                );
                println!(
                    "  kiln's CPU on {cpus} CPUs     {:7.1} s = {:.2}x of the peer's wall time, the least kiln's work can take here",
                    on_cpus(cold.cpu),
                    on_cpus(cold.cpu) / secs(total.wall)
                );
                println!(
                    "  compressors alone       {:7.1} s CPU (mksquashfs {:.1}, initrd `{compressor}` {:.1}) = {:.1} s on {cpus} CPUs = {:.2}x of the peer",
                    secs(comp),
                    secs(p.mksquashfs.cpu),
                    secs(initrd.cpu),
                    on_cpus(comp),
                    on_cpus(comp) / secs(total.wall)
                );
            }
            println!(
                "  kiln wall / own floor   {:7.2}x (its CPU time / {cpus} CPUs = {:.1} s; goal <= 1.10x)",
                secs(cold.wall) / on_cpus(cold.cpu),
                on_cpus(cold.cpu)
            );
            println!(
                "  squashfs                {:.1} / {:.1} MiB (kiln / peer, without /boot); with /boot (before) {:.1} MiB",
                kiln_size as f64 / 1048576.0,
                peer_size as f64 / 1048576.0,
                peer_cost.as_ref().map_or(0.0, |p| p.with_boot_bytes as f64 / 1048576.0)
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
