//! One build job: run the executor on the job's manifest (a child process,
//! osbuild's command-line contract), stream its monitor records to the
//! composer as progress and log lines, then upload the exported files to
//! every target of the image and report how each upload went.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kiln_api::compose::UploadTarget;
use kiln_api::jobs::{Artifact, BuildArgs, BuildResult, JobResult, ManifestResult};
use kiln_api::osbuild::{BuildOutput, MonitorRecord, StageLogs};
use kiln_api::sbom::ImageSbom;
use kiln_api::status::{
    Progress, StoredUpload, SubProgress, UploadFailure, UploadStatus, UploadedFile,
};
use kiln_api::worker::{AssignedJob, BuildPhase, FinishJob, JobAssignment, JobProgressUpdate};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch};

use crate::client::{Client, ClientError};
use crate::config::{Executor, WorkerConfig};
use crate::metrics::METRICS;
use crate::Shutdown;

/// How a job ended for this worker.
pub(crate) enum Ended {
    /// Report this to the composer.
    Finish(FinishJob),
    /// The composer canceled it: nothing to report.
    Canceled,
    /// The composer took the lease back: nothing to report.
    TakenBack,
    /// Stopped at once without a result (the worker was told to): given
    /// back to the composer, which queues it again.
    Aborted,
}

enum MonitorMsg {
    Log(String),
    Progress(Progress),
}

/// Turns the executor's RFC 7464 records into progress and log lines.
fn read_monitor(reader: std::io::PipeReader, tx: mpsc::UnboundedSender<MonitorMsg>) {
    use std::io::Read;
    let mut reader = reader;
    let mut stages = HashMap::new();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.iter().skip(1).position(|&b| b == 0x1e).map(|p| p + 1) {
            let record: Vec<u8> = buf.drain(..end).collect();
            handle_record(&record, &tx, &mut stages);
        }
    }
    if !buf.is_empty() {
        handle_record(&buf, &tx, &mut stages);
    }
}

/// `stages`: when each running stage (by id) was first heard of; a
/// stage's result then gives its duration.
fn handle_record(
    record: &[u8],
    tx: &mpsc::UnboundedSender<MonitorMsg>,
    stages: &mut HashMap<String, f64>,
) {
    let text = String::from_utf8_lossy(record);
    let Ok(r) = serde_json::from_str::<MonitorRecord>(text.trim_start_matches('\x1e').trim())
    else {
        return;
    };
    match (
        &r.result,
        r.context.pipeline.as_ref().and_then(|p| p.stage.as_ref()),
    ) {
        (None, Some(stage)) => {
            stages.entry(stage.id.clone()).or_insert(r.timestamp);
        }
        (Some(result), _) => {
            let id = result.get("id").and_then(|v| v.as_str()).unwrap_or("");
            let name = result.get("name").and_then(|v| v.as_str()).unwrap_or("");
            if let Some(start) = stages.remove(id) {
                METRICS
                    .stage_duration
                    .with_label_values(&[name])
                    .observe((r.timestamp - start).max(0.0));
            }
        }
        (None, None) => {}
    }
    if !r.message.is_empty() {
        let _ = tx.send(MonitorMsg::Log(r.message));
    }
    if let Some(p) = r.progress {
        let sub = p.progress.map(|s| SubProgress {
            done: s.done,
            total: s.total,
        });
        let _ = tx.send(MonitorMsg::Progress(Progress {
            done: p.done.min(p.total),
            total: p.total,
            subprogress: sub.filter(|s| s.done <= s.total),
        }));
    }
}

fn kill_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals the process group.
        unsafe { libc::kill(-pgid, signal) };
    }
}

/// Stops the executor: SIGTERM (it releases its mounts and devices), then
/// SIGKILL if it is still there after a few seconds.
async fn stop_executor(child: &mut tokio::process::Child, pgid: i32) {
    kill_group(pgid, libc::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(4), child.wait())
        .await
        .is_err()
    {
        kill_group(pgid, libc::SIGKILL);
        let _ = child.wait().await;
    }
}

pub(crate) async fn run(
    client: &Client,
    config: &WorkerConfig,
    job: &JobAssignment,
    mut shutdown: watch::Receiver<Shutdown>,
) -> Ended {
    let AssignedJob::Build { args, manifest } = &job.job else {
        return failed(
            format!("not a build job but a {} job", job.job.kind()),
            None,
        );
    };
    let Some(manifest) = manifest else {
        return failed(
            "the job came without its manifest (no manifest job result)".into(),
            None,
        );
    };
    let dir = config.work_dir.join(job.id.to_string());
    let result = build(client, config, job, args, manifest, &dir, &mut shutdown).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn failed(reason: String, result: Option<BuildResult>) -> Ended {
    let result = result.map(JobResult::Build);
    match FinishJob::failed(reason.as_str(), result.as_ref()) {
        Ok(finish) => Ended::Finish(finish),
        // Unreachable for these types; still report the failure itself.
        Err(e) => Ended::Finish(FinishJob {
            success: false,
            result: None,
            reason: Some(format!("{reason} (its result could not be written: {e})")),
        }),
    }
}

async fn build(
    client: &Client,
    config: &WorkerConfig,
    job: &JobAssignment,
    args: &BuildArgs,
    manifest: &ManifestResult,
    dir: &Path,
    shutdown: &mut watch::Receiver<Shutdown>,
) -> Ended {
    // The names become paths under `dir` and executor arguments.
    if let Err(e) = manifest.check_names() {
        return failed(e, None);
    }
    let out = dir.join("out");
    let manifest_path = dir.join("manifest.json");
    let prepared = std::fs::create_dir_all(&out)
        .and_then(|_| std::fs::create_dir_all(&config.store))
        .and_then(|_| std::fs::write(&manifest_path, manifest.manifest.to_string()));
    if let Err(e) = prepared {
        return failed(format!("preparing {}: {e}", dir.display()), None);
    }
    let (program, mut argv): (PathBuf, Vec<String>) = match &config.executor {
        Executor::Builtin => match std::env::current_exe() {
            Ok(exe) => (exe, vec!["osbuild".into()]),
            Err(e) => {
                return failed(
                    format!("locating this binary for the builtin executor: {e}"),
                    None,
                )
            }
        },
        Executor::Path(path) => (path.clone(), Vec::new()),
    };
    argv.extend(
        [
            "--store",
            &config.store.to_string_lossy(),
            "--output-directory",
            &out.to_string_lossy(),
            "--export",
            &manifest.export,
            "--json",
            "--monitor",
            "JSONSeqMonitor",
            "--monitor-fd",
            "3",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    if let Some(max) = config.store_max_bytes {
        argv.extend(["--cache-max-size".to_owned(), max.to_string()]);
    }
    for id in &manifest.checkpoints {
        argv.extend(["--checkpoint".to_owned(), id.clone()]);
    }
    argv.push(manifest_path.to_string_lossy().into_owned());

    let (monitor_r, monitor_w) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return failed(format!("monitor pipe: {e}"), None),
    };
    let monitor_fd = monitor_w.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // The request id for the executor's own lines; never one this worker
    // was started with.
    match &job.request_id {
        Some(id) => cmd.env(kiln_api::request_id::ENV, id.as_str()),
        None => cmd.env_remove(kiln_api::request_id::ENV),
    };
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(monitor_fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Should this worker die, the executor stops (and cleans up) too.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return failed(
                format!("starting the executor {}: {e}", program.display()),
                None,
            )
        }
    };
    drop(monitor_w);
    let build_started = std::time::Instant::now();
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    tracing::info!(job = %job.id, executor = %program.display(), "build started");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let log_tx = tx.clone();
    std::thread::spawn(move || read_monitor(monitor_r, tx));
    let mut stdout = child.stdout.take();
    let stdout_task = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut s).await;
        }
        s
    });
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = log_tx.send(MonitorMsg::Log(l));
            }
        });
    }

    let mut tick = tokio::time::interval(Duration::from_secs(config.heartbeat_secs.max(1)));
    let mut logs: Vec<String> = Vec::new();
    let mut progress: Option<Progress> = None;
    let status = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(MonitorMsg::Log(l)) => logs.push(l),
                Some(MonitorMsg::Progress(p)) => progress = Some(p),
                None => {}
            },
            _ = tick.tick() => {
                let lines: Vec<String> = logs.drain(..logs.len().min(kiln_api::worker::MAX_LOG_LINES)).collect();
                let update = JobProgressUpdate { phase: Some(BuildPhase::Building), progress: progress.clone(), log: lines };
                match client.progress(job.token, &update).await {
                    Ok(()) => {}
                    Err(ClientError::Canceled) => {
                        tracing::info!(job = %job.id, "canceled: stopping the executor");
                        stop_executor(&mut child, pgid).await;
                        return Ended::Canceled;
                    }
                    Err(ClientError::LeaseLost) => {
                        stop_executor(&mut child, pgid).await;
                        return Ended::TakenBack;
                    }
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "reporting progress"),
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() == Shutdown::Abort {
                    stop_executor(&mut child, pgid).await;
                    return Ended::Aborted;
                }
            },
            status = child.wait() => break status,
        }
    };
    // What the executor wrote last (the lines that say why a build failed)
    // is reported before the result, so the stored log keeps it: the
    // channel closes once its stderr and monitor pipes are read to the end.
    let drained = async {
        while let Some(msg) = rx.recv().await {
            match msg {
                MonitorMsg::Log(l) => logs.push(l),
                MonitorMsg::Progress(p) => progress = Some(p),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        tracing::warn!(job = %job.id, "the executor's output did not end with it");
    }
    for lines in logs.chunks(kiln_api::worker::MAX_LOG_LINES) {
        let update = JobProgressUpdate {
            phase: Some(BuildPhase::Building),
            progress: progress.clone(),
            log: lines.to_vec(),
        };
        if let Err(e) = client.progress(job.token, &update).await {
            tracing::warn!(job = %job.id, error = %e, "reporting the build's last lines");
            break;
        }
    }
    let stdout = stdout_task.await.unwrap_or_default();
    // Not a result at all (a crash, another program): the exit status says why.
    let result: Option<BuildOutput> = serde_json::from_str(&stdout).ok();
    let code = status.ok().and_then(|s| s.code());
    let succeeded = result.as_ref().is_some_and(BuildOutput::succeeded);
    let outcome = if code == Some(0) && succeeded {
        "success"
    } else {
        "failure"
    };
    METRICS
        .build_duration
        .with_label_values(&[&args.image_type, outcome])
        .observe(build_started.elapsed().as_secs_f64());
    // The store belongs to the build's user namespace: the executor
    // measures it.
    if let Some(bytes) = result.as_ref().and_then(BuildOutput::store_bytes) {
        METRICS.store_bytes.set(bytes as f64);
    }
    let result = match result {
        Some(r) if code == Some(0) && succeeded => r,
        r => {
            let log = r.as_ref().and_then(BuildOutput::log).map(trimmed_log);
            return failed(
                executor_failure(code, r.as_ref()),
                Some(BuildResult {
                    uploads: Vec::new(),
                    artifacts: Vec::new(),
                    kernel_cmdline: None,
                    log,
                    sboms: Vec::new(),
                }),
            );
        }
    };
    let exported = out.join(&manifest.export);
    let sboms = tokio::task::spawn_blocking({
        let (args, arch, manifest, result, exported) = (
            args.clone(),
            config.arch.clone(),
            manifest.clone(),
            result.clone(),
            exported.clone(),
        );
        move || crate::sbom::write(&args, &arch, &manifest, &result, &exported)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|written| written);
    let sboms = match sboms {
        Ok(sboms) => sboms,
        Err(e) => return failed(format!("the image's SBOM: {e}"), None),
    };
    upload(
        client, config, job, args, manifest, &exported, &result, sboms, shutdown,
    )
    .await
}

/// Why the executor failed, in one line a user can act on.
fn executor_failure(code: Option<i32>, result: Option<&BuildOutput>) -> String {
    if let Some(why) = result.and_then(BuildOutput::failure) {
        return why;
    }
    match code {
        Some(c) => format!("the executor exited with status {c}"),
        None => "the executor was killed".into(),
    }
}

/// How much of each stage's output a result carries at first.
pub(crate) const STAGE_LOG_TAIL: usize = 16 << 10;

/// The executor's per-stage log, each output cut to its last 16 KiB.
fn trimmed_log(log: &StageLogs) -> StageLogs {
    tail_log(log, STAGE_LOG_TAIL)
}

/// `log` with each stage's output cut to its last `max` bytes.
pub(crate) fn tail_log(log: &StageLogs, max: usize) -> StageLogs {
    let mut log = log.clone();
    for stage in log.values_mut().flatten() {
        let out = &stage.output;
        if out.len() > max {
            let mut cut = out.len() - max;
            while !out.is_char_boundary(cut) {
                cut += 1;
            }
            stage.output = format!("[…]{}", &out[cut..]);
        }
    }
    log
}

/// The regular files of an export directory. Anything else there (a
/// symbolic link, whatever it points to; a directory; a device) is left
/// out and logged: an upload reads only what the build itself wrote.
fn exported_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // The entry's own type: `file_type` does not follow a link.
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        } else {
            tracing::warn!(path = %entry.path().display(), "not uploaded: not a regular file");
        }
    }
    Ok(files)
}

fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = kiln_targets::open_regular(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, hex::encode(h.finalize())))
}

#[allow(clippy::too_many_arguments)]
async fn upload(
    client: &Client,
    config: &WorkerConfig,
    job: &JobAssignment,
    args: &BuildArgs,
    manifest: &ManifestResult,
    exported: &Path,
    result: &BuildOutput,
    sboms: Vec<ImageSbom>,
    shutdown: &mut watch::Receiver<Shutdown>,
) -> Ended {
    // The image's files: the named artifact first, then the rest (a pxe
    // export also holds the kernel and the initrd).
    let mut files = match exported_files(exported) {
        Ok(files) => files,
        Err(e) => {
            return failed(
                format!("reading the export {}: {e}", exported.display()),
                None,
            )
        }
    };
    files.sort_by_key(|p| {
        (
            p.file_name().map(|n| n != manifest.filename.as_str()),
            p.clone(),
        )
    });
    let mut artifacts = Vec::new();
    for f in &files {
        match tokio::task::spawn_blocking({
            let f = f.clone();
            move || sha256_file(&f)
        })
        .await
        {
            Ok(Ok((size, sha256))) => artifacts.push(Artifact {
                name: f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                size,
                sha256,
            }),
            Ok(Err(e)) => return failed(format!("{}: {e}", f.display()), None),
            Err(e) => return failed(e.to_string(), None),
        }
    }
    let total: u64 = artifacts.iter().map(|a| a.size).sum::<u64>() * args.targets.len() as u64;
    // The boot store keeps the image's (only) SBOM beside its files.
    let sbom_file =
        (sboms.len() == 1).then(|| exported.join(crate::sbom::file_name(&manifest.filename, None)));
    let done = Arc::new(AtomicU64::new(0));
    let owner = job.compose_id.unwrap_or(job.id);
    let uploads_fut = async {
        let mut statuses = Vec::new();
        let mut first_failure = None;
        for t in &args.targets {
            let kind = t.kind();
            if let UploadTarget::Boot(options) = t {
                let boot_job = crate::boot::BootJob {
                    compose_id: owner,
                    arch: &config.arch,
                    exported,
                    kernel_cmdline: manifest.kernel_cmdline.as_deref().unwrap_or(""),
                    result,
                    sbom: sbom_file.clone(),
                };
                match crate::boot::publish(config.boot.as_ref(), options, &boot_job).await {
                    Ok(published) => statuses.push(UploadStatus::booted(&published)),
                    Err(reason) => {
                        tracing::warn!(job = %job.id, target = "boot", %reason, "boot publish failed");
                        statuses.push(upload_failed(kind, reason, None, &mut first_failure));
                    }
                }
                continue;
            }
            let Some(target) = config.targets.get(kind) else {
                let reason = format!(
                    "this worker has no {kind:?} target configured (worker.toml [targets.{kind:?}])"
                );
                statuses.push(upload_failed(kind, reason, None, &mut first_failure));
                continue;
            };
            let mut uploaded = Vec::new();
            let mut failure = None;
            let upload_started = std::time::Instant::now();
            for (path, art) in files.iter().zip(&artifacts) {
                let name = if matches!(t, UploadTarget::Local(_)) {
                    format!("{owner}-{}-{}", args.image, art.name)
                } else {
                    format!("{owner}/{}/{}", args.image, art.name)
                };
                let base = done.load(Ordering::SeqCst);
                let counter = done.clone();
                match kiln_targets::upload(target, path, &name, move |d, _| {
                    counter.store(base + d, Ordering::SeqCst)
                })
                .await
                {
                    Ok(obj) => {
                        done.store(base + art.size, Ordering::SeqCst);
                        METRICS
                            .upload_bytes
                            .with_label_values(&[kind])
                            .inc_by(obj.size as f64);
                        uploaded.push(UploadedFile {
                            name: art.name.clone(),
                            url: obj.url,
                            size: obj.size,
                            sha256: obj.sha256,
                        });
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        break;
                    }
                }
            }
            let status = if failure.is_none() {
                "success"
            } else {
                "failure"
            };
            METRICS
                .upload_duration
                .with_label_values(&[kind, status])
                .observe(upload_started.elapsed().as_secs_f64());
            match failure {
                None => statuses.push(UploadStatus::stored(
                    kind,
                    &StoredUpload {
                        url: uploaded.first().map(|u| u.url.clone()),
                        files: uploaded,
                    },
                )),
                Some(reason) => {
                    tracing::warn!(job = %job.id, target = %kind, %reason, "upload failed");
                    statuses.push(upload_failed(
                        kind,
                        reason,
                        Some(uploaded),
                        &mut first_failure,
                    ));
                }
            }
        }
        (statuses, first_failure)
    };
    tokio::pin!(uploads_fut);
    let mut tick = tokio::time::interval(Duration::from_secs(config.heartbeat_secs.max(1)));
    let (statuses, first_failure) = loop {
        tokio::select! {
            r = &mut uploads_fut => break r,
            _ = tick.tick() => {
                let update = JobProgressUpdate {
                    phase: Some(BuildPhase::Uploading),
                    progress: Some(Progress { done: done.load(Ordering::SeqCst).min(total) as i64, total: total as i64, subprogress: None }),
                    log: Vec::new(),
                };
                match client.progress(job.token, &update).await {
                    Ok(()) => {}
                    Err(ClientError::Canceled) => return Ended::Canceled,
                    Err(ClientError::LeaseLost) => return Ended::TakenBack,
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "reporting progress"),
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() == Shutdown::Abort {
                    return Ended::Aborted;
                }
            },
        }
    };
    let build_result = BuildResult {
        uploads: statuses,
        artifacts: artifacts.clone(),
        kernel_cmdline: manifest.kernel_cmdline.clone(),
        log: result.log().map(trimmed_log),
        sboms,
    };
    match first_failure {
        None => match FinishJob::succeeded(&JobResult::Build(build_result)) {
            Ok(finish) => Ended::Finish(finish),
            Err(e) => failed(format!("writing the result: {e}"), None),
        },
        Some(reason) => failed(reason, Some(build_result)),
    }
}

/// The status of a target whose upload failed; the job's failure reason is
/// the first such target's.
fn upload_failed(
    kind: &str,
    reason: String,
    files: Option<Vec<UploadedFile>>,
    first_failure: &mut Option<String>,
) -> UploadStatus {
    first_failure.get_or_insert_with(|| format!("upload to {kind} failed: {reason}"));
    UploadStatus::failed(kind, &UploadFailure { reason, files })
}

#[cfg(test)]
mod export_tests {
    use super::exported_files;

    /// A symbolic link in the export (to a host file, or to a file of the
    /// export itself) and a directory are not among the files uploaded.
    #[test]
    fn only_regular_files_of_the_export_are_uploaded() {
        let host = tempfile::tempdir().expect("host dir");
        let secret = host.path().join("shadow");
        std::fs::write(&secret, "secret").expect("secret");
        let export = tempfile::tempdir().expect("export");
        std::fs::write(export.path().join("image.tar"), "image").expect("image");
        std::os::unix::fs::symlink(&secret, export.path().join("vmlinuz")).expect("link");
        std::os::unix::fs::symlink("image.tar", export.path().join("copy.tar")).expect("link");
        std::fs::create_dir(export.path().join("dir")).expect("dir");
        let files = exported_files(export.path()).expect("listing");
        assert_eq!(files, vec![export.path().join("image.tar")]);
    }
}
