//! Runs a manifest: fetches its sources, builds the pipelines the exports
//! need (each from the deepest stage the store already has), commits
//! their trees and copies the exported ones to the output directory.
//!
//! Commit policy: the last stage of every built pipeline is committed (a
//! rename, free), so an unchanged manifest rebuilds from the store without
//! running a stage; `--checkpoint ID|PIPELINE` also commits a copy of the
//! tree after that stage, so a later build resumes after it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Value};

use crate::manifest::{Manifest, Origin, Pipeline, Stage};
use crate::monitor::{Monitor, Position};
use crate::sandbox::{Outcome, Sandbox, INPUTS, TREE};
use crate::stages::identity::Clean;
use crate::stages::{self, DeviceArgs, InputArgs, StageArgs};
use crate::store::{ObjectLease, Store, WorkDir};

pub struct BuildOptions {
    pub exports: Vec<String>,
    pub checkpoints: Vec<String>,
    pub output_dir: Option<PathBuf>,
    /// Variables set in every stage's environment, besides the sandbox's
    /// own (`--stage-env`); the pipeline's SOURCE_DATE_EPOCH wins over them.
    pub stage_env: Vec<(String, String)>,
}

/// One stage that ran, as the JSON log reports it.
#[derive(Debug, Clone)]
pub struct StageLog {
    pub id: String,
    pub kind: String,
    pub output: String,
    pub success: bool,
    pub error: Option<String>,
}

#[derive(Debug)]
pub enum Failure {
    Source(crate::sources::SourceError),
    /// Boxed: the log entry is large and errors travel through `?`.
    Stage {
        pipeline: String,
        stage: Box<StageLog>,
    },
    Interrupted,
    /// An export would carry private key material the manifest does not
    /// allow (`kiln.identity.clean`'s `keep-private-keys`).
    PrivateKeys {
        export: String,
        pipeline: String,
        paths: Vec<String>,
    },
    Internal(String),
}

#[derive(Debug, Default)]
pub struct Report {
    /// Per pipeline, in manifest order: the stages run in this build.
    pub log: Vec<(String, Vec<StageLog>)>,
    /// Per pipeline: stage type to the metadata it reported.
    pub metadata: BTreeMap<String, Value>,
    pub failure: Option<Failure>,
}

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure::Internal(e.to_string())
}

fn pipeline_index(manifest: &Manifest, name: &str) -> Option<usize> {
    let name = name.strip_prefix("name:").unwrap_or(name);
    manifest.pipelines.iter().position(|p| p.name == name)
}

/// The pipelines whose trees pipeline `i`'s stages take as inputs.
fn pipeline_inputs(manifest: &Manifest, i: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for s in &manifest.pipelines[i].stages {
        for input in s.inputs.values().filter(|i| i.origin == Origin::Pipeline) {
            for (r, _) in &input.references {
                out.extend(pipeline_index(manifest, r));
            }
        }
    }
    out
}

/// The pipelines to build: the exports, the pipelines of checkpoints, and
/// everything they need (build roots and pipeline inputs), in manifest order.
fn needed(manifest: &Manifest, opts: &BuildOptions) -> BTreeSet<usize> {
    let index = |name: &str| pipeline_index(manifest, name);
    let mut todo: Vec<usize> = opts.exports.iter().filter_map(|e| index(e)).collect();
    for c in &opts.checkpoints {
        if let Some(i) = index(c.strip_prefix("name:").unwrap_or(c)) {
            todo.push(i);
        }
        for (i, p) in manifest.pipelines.iter().enumerate() {
            if p.stages.iter().any(|s| &s.id == c) {
                todo.push(i);
            }
        }
    }
    let mut out = BTreeSet::new();
    while let Some(i) = todo.pop() {
        if !out.insert(i) {
            continue;
        }
        let p = &manifest.pipelines[i];
        if let Some(b) = &p.build {
            todo.extend(index(b));
        }
        todo.extend(pipeline_inputs(manifest, i));
    }
    out
}

struct Builder<'a> {
    store: &'a Store,
    work: &'a WorkDir,
    monitor: &'a Monitor,
    checkpoints: &'a [String],
    stage_env: &'a [(String, String)],
    /// Leases on the finished pipelines' trees, by name.
    trees: Mutex<BTreeMap<String, ObjectLease>>,
    empty: PathBuf,
    /// Pipelines finished so far (the monitor's progress).
    finished: AtomicUsize,
}

/// The pipelines `i` must wait for among those being built: its build
/// root and the pipelines whose trees its stages take.
fn dependencies(manifest: &Manifest, i: usize, todo: &[usize]) -> Vec<usize> {
    let mut deps = pipeline_inputs(manifest, i);
    if let Some(b) = &manifest.pipelines[i].build {
        deps.extend(pipeline_index(manifest, b));
    }
    deps.retain(|d| *d != i && todo.contains(d));
    deps.sort_unstable();
    deps.dedup();
    deps
}

/// Which pipelines have started and finished, and how the first failure
/// went; shared by the threads that build.
#[derive(Default)]
struct Schedule {
    started: BTreeSet<usize>,
    done: BTreeSet<usize>,
    running: usize,
    /// Per pipeline: the stages it ran and its metadata.
    results: BTreeMap<usize, (Vec<StageLog>, Value)>,
    /// The first failure; nothing new starts after it.
    failure: Option<Failure>,
}

impl Schedule {
    /// The first pipeline (in manifest order) not started whose
    /// dependencies are all built.
    fn next(&self, todo: &[usize], deps: &BTreeMap<usize, Vec<usize>>) -> Option<usize> {
        todo.iter()
            .copied()
            .find(|i| !self.started.contains(i) && deps[i].iter().all(|d| self.done.contains(d)))
    }
}

pub fn build(manifest: &Manifest, store: &Store, opts: &BuildOptions, monitor: &Monitor) -> Report {
    let mut report = Report::default();
    let work = match store.work_dir() {
        Ok(w) => w,
        Err(e) => {
            report.failure = Some(internal(format!("store: {e}")));
            return report;
        }
    };
    let todo = needed(manifest, opts);
    let pos = Position {
        pipeline_count: todo.len(),
        ..Default::default()
    };

    // Sources, only when some pipeline must really be built.
    let must_build = todo.iter().any(|&i| {
        manifest.pipelines[i]
            .id
            .as_ref()
            .is_some_and(|id| !store.contains(id))
    });
    if must_build {
        monitor.event(&pos, "sources: fetching what the store does not have");
        let progress_monitor: Arc<dyn Fn(usize, usize) + Send + Sync> = {
            // Progress lines only: the monitor is not shared across threads.
            Arc::new(|done, total| eprintln!("sources: {done}/{total}"))
        };
        let fetched = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| crate::sources::SourceError {
                checksum: String::new(),
                reason: e.to_string(),
            })
            .and_then(|rt| {
                rt.block_on(crate::sources::fetch_all(
                    &store.source_dir(),
                    &manifest.sources,
                    progress_monitor,
                ))
            });
        if let Err(e) = fetched {
            report.failure = Some(Failure::Source(e));
            return report;
        }
    }

    let empty = work.path.join("empty");
    if let Err(e) = fs::create_dir_all(&empty) {
        report.failure = Some(internal(e));
        return report;
    }
    let b = Builder {
        store,
        work: &work,
        monitor,
        checkpoints: &opts.checkpoints,
        stage_env: &opts.stage_env,
        trees: Mutex::new(BTreeMap::new()),
        empty,
        finished: AtomicUsize::new(0),
    };
    // Pipelines that do not depend on each other are built at the same
    // time (the initrd beside the squashing of the root), as many at once
    // as there are CPUs; each starts when the pipelines it takes are built.
    let todo: Vec<usize> = todo.into_iter().collect();
    let deps: BTreeMap<usize, Vec<usize>> = todo
        .iter()
        .map(|&i| (i, dependencies(manifest, i, &todo)))
        .collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(todo.len())
        .max(1);
    let schedule = Mutex::new(Schedule::default());
    let changed = Condvar::new();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| b.build_ready(manifest, &todo, &deps, &schedule, &changed));
        }
    });
    let mut schedule = schedule.into_inner().unwrap_or_else(|e| e.into_inner());
    for i in &todo {
        let Some((log, metadata)) = schedule.results.remove(i) else {
            continue;
        };
        let name = &manifest.pipelines[*i].name;
        if !log.is_empty() {
            report.log.push((name.clone(), log));
        }
        if metadata.as_object().is_some_and(|m| !m.is_empty()) {
            report.metadata.insert(name.clone(), metadata);
        }
    }
    if let Some(f) = schedule.failure {
        report.failure = Some(f);
        return report;
    }
    if let Some(out) = &opts.output_dir {
        for name in &opts.exports {
            if let Err(f) = b.check_private_keys(manifest, name) {
                report.failure = Some(f);
                return report;
            }
        }
        for name in &opts.exports {
            if let Err(e) = b.export(name, out) {
                report.failure = Some(internal(format!("export {name}: {e}")));
                return report;
            }
        }
    }
    report
}

impl Builder<'_> {
    /// One building thread: takes the next pipeline whose dependencies are
    /// built, builds it, and so on until every pipeline has started, or
    /// one has failed.
    fn build_ready(
        &self,
        manifest: &Manifest,
        todo: &[usize],
        deps: &BTreeMap<usize, Vec<usize>>,
        schedule: &Mutex<Schedule>,
        changed: &Condvar,
    ) {
        let lock = || schedule.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let i = {
                let mut st = lock();
                loop {
                    if st.failure.is_some() || st.started.len() == todo.len() {
                        return;
                    }
                    if let Some(i) = st.next(todo, deps) {
                        st.started.insert(i);
                        st.running += 1;
                        break i;
                    }
                    if st.running == 0 {
                        // Nothing runs and nothing can start: a cycle.
                        st.failure = Some(internal(
                            "the manifest's pipelines depend on each other in a cycle",
                        ));
                        changed.notify_all();
                        return;
                    }
                    st = changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            };
            let p = &manifest.pipelines[i];
            let mut pos = Position {
                pipeline_count: todo.len(),
                pipeline_index: self.finished.load(Ordering::SeqCst),
                pipeline: Some((p.name.clone(), p.id.clone())),
                stage_count: p.stages.len(),
                ..Default::default()
            };
            let mut log = Vec::new();
            let result = self.pipeline(p, &mut pos, &mut log);
            self.finished.fetch_add(1, Ordering::SeqCst);
            let mut st = lock();
            st.running -= 1;
            st.done.insert(i);
            match result {
                Ok(metadata) => {
                    st.results.insert(i, (log, metadata));
                }
                Err(f) => {
                    st.results.insert(i, (log, json!({})));
                    if st.failure.is_none() {
                        st.failure = Some(f);
                    }
                }
            }
            changed.notify_all();
        }
    }

    /// The tree of a pipeline built in this run (or found in the store).
    fn tree_of(&self, name: &str) -> Option<PathBuf> {
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|lease| lease.tree.clone())
    }

    fn keep_tree(&self, name: &str, lease: ObjectLease) {
        self.trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), lease);
    }

    /// Builds one pipeline (or finds it in the store); returns its metadata.
    fn pipeline(
        &self,
        p: &Pipeline,
        pos: &mut Position,
        log: &mut Vec<StageLog>,
    ) -> Result<Value, Failure> {
        let Some(pid) = p.id.clone() else {
            return Ok(json!({}));
        };
        if let Some(lease) = self.store.lease(&pid).map_err(internal)? {
            self.monitor
                .event(pos, &format!("pipeline {}: in the store ({pid})", p.name));
            self.keep_tree(&p.name, lease);
            return Ok(self.store.metadata(&pid));
        }
        let tree = self
            .work
            .path
            .join(format!("tree-{}", uuid::Uuid::new_v4()));
        // Resume from the deepest stage the store has.
        let mut start = 0;
        let mut metadata = json!({});
        for (i, s) in p.stages.iter().enumerate().rev() {
            if let Some(lease) = self.store.lease(&s.id).map_err(internal)? {
                self.monitor.event(
                    pos,
                    &format!(
                        "pipeline {}: resuming after stage {} ({})",
                        p.name, s.kind, s.id
                    ),
                );
                copy_tree(&lease.tree, &tree).map_err(internal)?;
                metadata = self.store.metadata(&s.id);
                start = i + 1;
                break;
            }
        }
        if start == 0 {
            fs::create_dir(&tree).map_err(internal)?;
        }
        self.monitor.event(
            pos,
            &format!(
                "pipeline {}: building {} of {} stages",
                p.name,
                p.stages.len() - start,
                p.stages.len()
            ),
        );
        let build_root = match &p.build {
            None => None,
            Some(b) => match self.tree_of(b) {
                Some(tree) => Some(tree),
                None => return Err(internal(format!("build pipeline {b:?} has no tree (a pipeline without stages cannot be a build root)"))),
            },
        };
        for (i, stage) in p.stages.iter().enumerate().skip(start) {
            pos.stage_index = i;
            pos.pipeline_index = self.finished.load(Ordering::SeqCst);
            pos.stage = Some((stage.kind.clone(), stage.id.clone()));
            self.monitor
                .event(pos, &format!("stage {} ({})", stage.kind, stage.id));
            let (entry, md) = self.stage(p, stage, &tree, build_root.as_deref(), pos)?;
            let ok = entry.success;
            log.push(entry.clone());
            self.monitor.result(
                pos,
                &json!({"id": entry.id, "name": entry.kind, "success": ok, "output": entry.output}),
            );
            if !ok {
                return Err(Failure::Stage {
                    pipeline: p.name.clone(),
                    stage: Box::new(entry),
                });
            }
            if !md.is_null() {
                metadata[stage.kind.as_str()] = md;
            }
            let last = i + 1 == p.stages.len();
            let wanted = self.checkpoints.iter().any(|c| c == &stage.id);
            if wanted && !last {
                let copy = self
                    .work
                    .path
                    .join(format!("checkpoint-{}", uuid::Uuid::new_v4()));
                copy_tree(&tree, &copy).map_err(internal)?;
                self.store
                    .commit(&stage.id, &copy, &metadata)
                    .map_err(internal)?;
            }
        }
        pos.stage = None;
        pos.stage_index = p.stages.len();
        self.store
            .commit(&pid, &tree, &metadata)
            .map_err(internal)?;
        let lease = self.store.lease(&pid).map_err(internal)?.ok_or_else(|| {
            internal(format!(
                "{pid} vanished from the store right after its commit"
            ))
        })?;
        self.keep_tree(&p.name, lease);
        Ok(metadata)
    }

    /// Runs one stage in the sandbox; returns its log entry and metadata.
    fn stage(
        &self,
        p: &Pipeline,
        stage: &Stage,
        tree: &Path,
        build_root: Option<&Path>,
        pos: &Position,
    ) -> Result<(StageLog, Value), Failure> {
        let scratch = self
            .work
            .path
            .join(format!("stage-{}", uuid::Uuid::new_v4()));
        let api = scratch.join("api");
        fs::create_dir_all(&api).map_err(internal)?;
        let mut inputs = BTreeMap::new();
        let mut binds = Vec::new();
        for (name, input) in &stage.inputs {
            let (host, files) = match input.origin {
                Origin::Source => {
                    let dir = scratch.join("inputs").join(name);
                    fs::create_dir_all(&dir).map_err(internal)?;
                    for (checksum, _) in &input.references {
                        let from = self.store.source_dir().join(checksum);
                        let to = dir.join(checksum);
                        if fs::hard_link(&from, &to).is_err() {
                            fs::copy(&from, &to)
                                .map_err(|e| internal(format!("{}: {e}", from.display())))?;
                        }
                    }
                    (
                        dir,
                        input.references.iter().map(|(c, _)| c.clone()).collect(),
                    )
                }
                Origin::Pipeline => {
                    let (r, options) = &input.references[0];
                    let target = r.strip_prefix("name:").unwrap_or(r);
                    let path = self.tree_of(target).unwrap_or_else(|| self.empty.clone());
                    // A files input names files of the pipeline's tree.
                    let files = if input.kind == "org.osbuild.files" {
                        options
                            .get("file")
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .into_iter()
                            .collect()
                    } else {
                        Vec::new()
                    };
                    (path, files)
                }
            };
            inputs.insert(
                name.clone(),
                InputArgs {
                    path: format!("{INPUTS}/{name}"),
                    files,
                },
            );
            binds.push((name.clone(), host));
        }
        // A loopback device is a byte range of a file in the tree: the
        // stage's tools write there directly (no loop device, no mount).
        let mut devices: BTreeMap<String, DeviceArgs> = BTreeMap::new();
        for (name, dev) in &stage.devices {
            if dev.parent.is_some() {
                return Err(internal(format!(
                    "device {name:?}: parent devices are not supported"
                )));
            }
            let filename = dev
                .options
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if filename.is_empty() || filename.split('/').any(|c| c == "..") {
                return Err(internal(format!(
                    "device {name:?}: {filename:?} is not a file of the tree"
                )));
            }
            let sector = dev
                .options
                .get("sector-size")
                .and_then(Value::as_u64)
                .unwrap_or(512);
            let number = |key: &str| dev.options.get(key).and_then(Value::as_u64).unwrap_or(0);
            let (offset, size) = match (
                number("start").checked_mul(sector),
                number("size").checked_mul(sector),
            ) {
                (Some(o), Some(s)) => (o, s),
                _ => {
                    return Err(internal(format!(
                        "device {name:?}: start or size is out of range"
                    )))
                }
            };
            devices.insert(
                name.clone(),
                DeviceArgs {
                    file: format!("{TREE}/{}", filename.trim_start_matches('/')),
                    offset,
                    size,
                },
            );
        }
        let args = StageArgs {
            kind: stage.kind.clone(),
            options: stage.options.clone(),
            inputs,
            devices,
            source_epoch: p.source_epoch,
            build_root: build_root.is_some(),
        };
        fs::write(
            api.join("args.json"),
            serde_json::to_vec(&args).map_err(internal)?,
        )
        .map_err(internal)?;
        let mut env = self.stage_env.to_vec();
        if let Some(epoch) = p.source_epoch {
            env.push(("SOURCE_DATE_EPOCH".to_owned(), epoch.to_string()));
        }
        let sandbox = Sandbox {
            build_root,
            tree,
            inputs: binds,
            api: &api,
            env,
        };
        let mut output = String::new();
        let outcome = sandbox
            .run(&mut |line| {
                self.monitor.log(pos, line);
                output.push_str(line);
                output.push('\n');
            })
            .map_err(internal)?;
        let entry = |success: bool, error: Option<String>| StageLog {
            id: stage.id.clone(),
            kind: stage.kind.clone(),
            output: output.clone(),
            success,
            error,
        };
        let result = match outcome {
            Outcome::Interrupted => Err(Failure::Interrupted),
            Outcome::Exited(0) => {
                let md = fs::read(api.join("metadata.json"))
                    .ok()
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                Ok((entry(true, None), md))
            }
            Outcome::Exited(code) => {
                // Without the stage's own error (bubblewrap failed, or the
                // stage died), its last line of output says why.
                let reason = fs::read_to_string(api.join("error.txt")).unwrap_or_else(|_| {
                    match output.lines().rev().find(|l| !l.trim().is_empty()) {
                        Some(last) => format!("the stage exited with status {code}: {last}"),
                        None => format!("the stage exited with status {code}"),
                    }
                });
                Ok((entry(false, Some(reason)), Value::Null))
            }
        };
        let _ = crate::store::remove_tree(&scratch);
        result
    }

    /// Refuses an export whose trees (the exported pipeline's and those
    /// of every pipeline it takes as input) hold private key material
    /// that the pipeline's `kiln.identity.clean` stages do not keep on
    /// purpose. Inputs are checked before the pipelines that take them, so
    /// the error names the tree a key was put in; a key kept upstream may
    /// then reappear inside an artifact made from that tree (an
    /// uncompressed tar), which is not a new finding.
    fn check_private_keys(&self, manifest: &Manifest, export: &str) -> Result<(), Failure> {
        let inputs = |i: usize| pipeline_inputs(manifest, i);
        // Post-order: every pipeline after the pipelines it takes as input.
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(usize, bool)> = pipeline_index(manifest, export)
            .map(|i| (i, false))
            .into_iter()
            .collect();
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                order.push(i);
            } else if seen.insert(i) {
                stack.push((i, true));
                stack.extend(inputs(i).into_iter().map(|j| (j, false)));
            }
        }
        let mut keeps_keys: BTreeMap<usize, bool> = BTreeMap::new();
        for i in order {
            let p = &manifest.pipelines[i];
            let mut kept = BTreeSet::new();
            for s in p
                .stages
                .iter()
                .filter(|s| s.kind == <Clean as stages::Stage>::NAME)
            {
                let o: <Clean as stages::Stage>::Options =
                    serde_json::from_value(s.options.clone()).map_err(internal)?;
                kept.extend(o.keep_private_keys);
            }
            let upstream_keeps = inputs(i)
                .iter()
                .any(|j| keeps_keys.get(j).copied().unwrap_or(false));
            keeps_keys.insert(i, upstream_keeps || !kept.is_empty());
            let Some(tree) = self.tree_of(&p.name) else {
                continue;
            };
            let found = crate::secrets::scan_object(&tree)
                .map_err(|e| internal(format!("scanning {} for private keys: {e}", p.name)))?;
            let paths: Vec<String> = found
                .into_iter()
                .filter(|f| {
                    let kept_here = kept.contains(&f.path);
                    let inside_kept_upstream =
                        upstream_keeps && f.kind == crate::secrets::FindingKind::PemBlock;
                    !(kept_here || inside_kept_upstream)
                })
                .map(|f| f.path)
                .collect();
            if !paths.is_empty() {
                return Err(Failure::PrivateKeys {
                    export: export.to_owned(),
                    pipeline: p.name.clone(),
                    paths,
                });
            }
        }
        Ok(())
    }

    /// Copies a built pipeline's tree to `OUT/NAME`, replacing it whole.
    /// The copy belongs to the user that started the executor: its owners
    /// inside the build namespace mean nothing to the host (the artifacts
    /// themselves, archives and images, carry the tree's owners).
    fn export(&self, name: &str, out: &Path) -> std::io::Result<()> {
        let tree = self.tree_of(name).unwrap_or_else(|| self.empty.clone());
        if !out.exists() {
            fs::create_dir_all(out)?;
            crate::userns::give_to_owner(out)?;
        }
        let partial = out.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = crate::store::remove_tree(&partial);
        copy_tree(&tree, &partial)?;
        crate::userns::give_tree_to_owner(&partial)?;
        let dest = out.join(name);
        if dest.exists() {
            crate::store::remove_tree(&dest)?;
        }
        fs::rename(&partial, &dest)
    }
}

/// `cp -a --reflink=auto FROM/. TO`: a full copy that shares extents
/// where the file system can.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    let status = std::process::Command::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(from.join("."))
        .arg(to)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "cp -a {} {}: {status}",
            from.display(),
            to.display()
        )))
    }
}
