//! Following a compose to its end: `kiln compose wait` and `start --wait`.
//!
//! The composer's event stream (`GET /composes/{id}/events`) sends the
//! compose's status first and after every change, `job` events when a job
//! changes state, and `log` events with the build's log lines; it ends after
//! the status of a finished compose. A broken stream is opened again (the
//! first event is the status, so nothing is lost but log lines).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_api::events::{ComposeEvent, JobEventData};
use kiln_api::jobs::{JobKind, JobResult};
use kiln_api::status::{
    ComposeLogs, ComposeStatus, ComposeStatusValue, ImageStatus, ImageStatusValue, UploadDetails,
    UploadStatus, UploadStatusValue,
};
use serde_json::{json, Value};

use crate::compose::Output;
use crate::composer_api::{ApiError, Composer};
use crate::term::shown;

/// How many times in a row a broken event stream is opened again.
const RECONNECTS: u32 = 5;

pub(crate) struct FollowOptions {
    pub output: Output,
    /// Print the build's log lines as they come.
    pub follow_logs: bool,
}

/// Follows compose `id` until it ends, then reports where its images went.
/// Exit 0 when it succeeded, 1 when it failed or was canceled.
pub(crate) async fn follow(
    composer: &Composer,
    id: &str,
    opts: &FollowOptions,
) -> anyhow::Result<ExitCode> {
    let mut view = View::new(opts.output);
    let last = match watch(composer, id, opts, &mut view).await {
        Ok(last) => last,
        Err(e) => {
            view.finish();
            return Err(e.into());
        }
    };
    view.finish();
    let status: ComposeStatus = serde_json::from_value(last.clone()).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a compose status: {e}",
            composer.url(&format!("/composes/{id}/events"))
        )
    })?;
    let cmdlines = kernel_cmdlines(composer, id, status.image_statuses.len()).await;
    match opts.output {
        Output::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "status": last,
                    "kernel_cmdlines": cmdlines,
                }))?
            );
        }
        Output::Text => print_report(&status, &cmdlines),
    }
    report_failure(&status);
    Ok(if status.status == ComposeStatusValue::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Reads events until the stream ends after a finished compose; returns its
/// last status as the composer sent it.
async fn watch(
    composer: &Composer,
    id: &str,
    opts: &FollowOptions,
    view: &mut View,
) -> Result<Value, ApiError> {
    let path = format!("/composes/{id}/events");
    // The last status, as sent and as read.
    let mut last: Option<(Value, ComposeStatus)> = None;
    let mut failures = 0u32;
    loop {
        let broken = match composer.events(&path).await {
            // The compose is gone or the id is wrong: no point retrying.
            Err(e @ ApiError::Refused { .. }) => return Err(e),
            // Never reached: the URL or the composer is wrong, say so now.
            Err(e) if last.is_none() => return Err(e),
            Err(e) => e,
            Ok(mut events) => {
                let mut broken = None;
                while let Some(ev) = events.next().await {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => {
                            broken = Some(e);
                            break;
                        }
                    };
                    failures = 0;
                    let unexpected = |e: serde_json::Error| ApiError::Unexpected {
                        url: composer.url(&path),
                        message: format!("a {} event that is not the API's: {e}", ev.event),
                    };
                    match ComposeEvent::parse(&ev.event, &ev.data).map_err(unexpected)? {
                        Some(ComposeEvent::Status(status)) => {
                            view.status(&status);
                            // Kept as the composer sent it, for `--output json`.
                            let sent: Value = serde_json::from_str(&ev.data).map_err(unexpected)?;
                            last = Some((sent, *status));
                        }
                        Some(ComposeEvent::Job(job)) => view.job(&job),
                        Some(ComposeEvent::Log(log)) if opts.follow_logs => view.log(&log.lines),
                        Some(ComposeEvent::Log(_)) | None => {}
                    }
                }
                match (broken, &last) {
                    (None, Some((v, s))) if s.status != ComposeStatusValue::Pending => {
                        return Ok(v.clone())
                    }
                    (None, _) => ApiError::Unexpected {
                        url: composer.url(&path),
                        message: "the event stream ended before the compose did".into(),
                    },
                    (Some(e), _) => e,
                }
            }
        };
        failures += 1;
        if failures > RECONNECTS {
            return Err(broken);
        }
        view.note(&format!("event stream broke ({broken}); reconnecting"));
        tokio::time::sleep(Duration::from_secs(u64::from(failures))).await;
    }
}

/// The kernel command line of each image that has one (pxe), from the
/// results of its jobs. Missing results (an older composer, a failure
/// before the manifest) leave `None`.
async fn kernel_cmdlines(composer: &Composer, id: &str, images: usize) -> Vec<Option<String>> {
    let mut out = vec![None; images];
    let logs: ComposeLogs = match composer.get(&format!("/composes/{id}/logs")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kiln: warning: cannot read the build results: {e}");
            return out;
        }
    };
    for build in &logs.image_builds {
        // The build's own result first: it is what was built.
        let from = |kind: JobKind| {
            build
                .jobs
                .iter()
                .filter(|j| j.job_type == kind.as_str())
                .find_map(|j| match j.result()?.ok()? {
                    JobResult::Build(b) => b.kernel_cmdline,
                    JobResult::Manifest(m) => m.kernel_cmdline,
                    JobResult::Depsolve(_) | JobResult::Boot(_) => None,
                })
        };
        let found = from(JobKind::Build).or_else(|| from(JobKind::Manifest));
        if let (Some(slot), Some(c)) = (out.get_mut(build.image), found) {
            *slot = Some(c);
        }
    }
    out
}

fn progress_text(p: Option<&kiln_api::status::Progress>, status: ImageStatusValue) -> String {
    match p {
        None => String::new(),
        // While uploading, progress counts bytes.
        Some(p) if status == ImageStatusValue::Uploading => {
            format!("{} of {} MiB", p.done >> 20, p.total >> 20)
        }
        Some(p) => {
            let mut s = format!("pipelines {}/{}", p.done, p.total);
            if let Some(sp) = &p.subprogress {
                s.push_str(&format!(", stages {}/{}", sp.done, sp.total));
            }
            s
        }
    }
}

pub(crate) fn image_status_word(s: ImageStatusValue) -> &'static str {
    match s {
        ImageStatusValue::Success => "success",
        ImageStatusValue::Failure => "failure",
        ImageStatusValue::Pending => "pending",
        ImageStatusValue::Building => "building",
        ImageStatusValue::Uploading => "uploading",
        ImageStatusValue::Registering => "registering",
    }
}

pub(crate) fn upload_status_word(s: UploadStatusValue) -> &'static str {
    match s {
        UploadStatusValue::Success => "success",
        UploadStatusValue::Failure => "failure",
        UploadStatusValue::Pending => "pending",
        UploadStatusValue::Running => "running",
    }
}

/// One line about an image while it is being made.
fn image_line(img: &ImageStatus) -> String {
    let word = image_status_word(img.status);
    match progress_text(img.progress.as_ref(), img.status) {
        p if p.is_empty() => word.to_owned(),
        p => format!("{word}: {p}"),
    }
}

/// Where an upload went: its lines of the final report.
pub(crate) fn upload_lines(u: &UploadStatus) -> Vec<String> {
    let mut head = format!("{}: {}", u.target_type, upload_status_word(u.status));
    let (url, files, reason) = match u.details() {
        Ok(UploadDetails::Stored(s)) => (s.url, s.files, None),
        Ok(UploadDetails::Boot(b)) => (b.url, Vec::new(), None),
        Ok(UploadDetails::Failed(f)) => (None, f.files.unwrap_or_default(), Some(f.reason)),
        // Options this CLI cannot read: the head line alone.
        Err(_) => (None, Vec::new(), None),
    };
    if let Some(url) = url {
        head.push_str(&format!("  {url}"));
    }
    let mut out = vec![head];
    for f in files {
        let mut line = format!("  {}  {} bytes", f.name, f.size);
        if !f.sha256.is_empty() {
            line.push_str(&format!("  sha256:{}", f.sha256));
        }
        if !f.url.is_empty() {
            line.push_str(&format!("  {}", f.url));
        }
        out.push(line);
    }
    if let Some(r) = reason {
        out.push(format!("  reason: {r}"));
    }
    out
}

fn image_label(i: usize, n: usize) -> String {
    if n > 1 {
        format!("image {i}")
    } else {
        "image".to_owned()
    }
}

fn print_report(status: &ComposeStatus, cmdlines: &[Option<String>]) {
    let n = status.image_statuses.len();
    let outcome = match status.status {
        ComposeStatusValue::Success => "succeeded",
        _ if status.canceled => "was canceled",
        ComposeStatusValue::Failure => "failed",
        ComposeStatusValue::Pending => "is pending",
    };
    println!("compose {} {outcome}", status.id);
    for (i, img) in status.image_statuses.iter().enumerate() {
        println!("{}: {}", image_label(i, n), image_status_word(img.status));
        for u in img.upload_statuses.iter().flatten() {
            for line in upload_lines(u) {
                println!("  {}", shown(&line));
            }
        }
        if let Some(Some(c)) = cmdlines.get(i) {
            println!("  kernel command line: {}", shown(c));
        }
    }
}

/// Why the compose did not succeed, on standard error.
fn report_failure(status: &ComposeStatus) {
    if status.status == ComposeStatusValue::Success {
        return;
    }
    let n = status.image_statuses.len();
    for (i, img) in status.image_statuses.iter().enumerate() {
        if let Some(e) = &img.error {
            let what = if status.canceled {
                "was canceled"
            } else {
                "failed"
            };
            let whose = if n > 1 {
                format!("compose {} image {i}", status.id)
            } else {
                format!("compose {}", status.id)
            };
            eprintln!("kiln: {whose} {what}: {}", shown(&e.reason));
        }
        for u in img.upload_statuses.iter().flatten() {
            if u.status == UploadStatusValue::Failure {
                let reason = match u.details() {
                    Ok(UploadDetails::Failed(f)) => f.reason,
                    _ => "no reason given".into(),
                };
                eprintln!(
                    "kiln: upload to {} failed: {}",
                    u.target_type,
                    shown(&reason)
                );
            }
        }
    }
}

/// The bars of one image: a spinner with its phase until the worker reports
/// progress, then pipelines done/total, and under it the current
/// pipeline's stages.
struct ImageBars {
    pipelines: ProgressBar,
    stages: Option<ProgressBar>,
    measured: bool,
    /// The bar counts bytes (uploading), not pipelines.
    uploading: bool,
}

impl ImageBars {
    fn new(multi: &MultiProgress, image: Option<usize>) -> ImageBars {
        let pipelines = multi.add(ProgressBar::new(0));
        pipelines.set_style(style("{spinner} {prefix}{msg}"));
        if let Some(i) = image {
            pipelines.set_prefix(format!("image {i}: "));
        }
        pipelines.enable_steady_tick(Duration::from_millis(120));
        ImageBars {
            pipelines,
            stages: None,
            measured: false,
            uploading: false,
        }
    }

    fn show(&mut self, multi: &MultiProgress, img: &ImageStatus) {
        self.pipelines.set_message(image_status_word(img.status));
        if let Some(p) = &img.progress {
            let uploading = img.status == ImageStatusValue::Uploading;
            if !self.measured || uploading != self.uploading {
                self.measured = true;
                self.uploading = uploading;
                self.pipelines.set_style(style(if uploading {
                    "{spinner} {prefix}{msg:10} [{bar:30}] {bytes}/{total_bytes}"
                } else {
                    "{spinner} {prefix}{msg:10} [{bar:30}] {pos}/{len} pipelines"
                }));
                if uploading {
                    if let Some(stages) = self.stages.take() {
                        stages.finish_and_clear();
                    }
                }
            }
            self.pipelines.set_length(p.total.max(0) as u64);
            self.pipelines.set_position(p.done.max(0) as u64);
            if let Some(sp) = &p.subprogress {
                let stages = self.stages.get_or_insert_with(|| {
                    let bar = multi.insert_after(&self.pipelines, ProgressBar::new(0));
                    bar.set_style(style("  {prefix}{msg:10} [{bar:30}] {pos}/{len} stages"));
                    bar
                });
                stages.set_length(sp.total.max(0) as u64);
                stages.set_position(sp.done.max(0) as u64);
            }
        }
        // A built image reports no progress any more: all done.
        if img.status == ImageStatusValue::Success {
            for bar in std::iter::once(&self.pipelines).chain(&self.stages) {
                if let Some(len) = bar.length() {
                    bar.set_position(len);
                }
            }
        }
    }
}

/// Progress as bars on a terminal, as lines otherwise. In JSON mode the
/// lines go to standard error, which keeps standard output one document.
enum View {
    Bars {
        multi: MultiProgress,
        images: Vec<ImageBars>,
        to_stderr: bool,
    },
    Lines {
        to_stderr: bool,
        last: Vec<String>,
    },
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl View {
    fn new(output: Output) -> View {
        let to_stderr = output == Output::Json;
        if std::io::stderr().is_terminal() {
            View::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                images: Vec::new(),
                to_stderr,
            }
        } else {
            View::Lines {
                to_stderr,
                last: Vec::new(),
            }
        }
    }

    /// A line of text, printed above the bars or as it is.
    fn say(&self, line: &str, to_stdout: bool) {
        let (View::Bars { to_stderr, .. } | View::Lines { to_stderr, .. }) = self;
        let line = shown(line);
        let print = || {
            if *to_stderr || !to_stdout {
                eprintln!("{line}");
            } else {
                println!("{line}");
                // Lines reach a pipe as they happen, not at exit.
                let _ = std::io::stdout().flush();
            }
        };
        match self {
            View::Bars { multi, .. } => multi.suspend(print),
            View::Lines { .. } => print(),
        }
    }

    fn note(&self, line: &str) {
        self.say(&format!("kiln: {line}"), false);
    }

    fn status(&mut self, status: &ComposeStatus) {
        let n = status.image_statuses.len();
        match self {
            View::Bars { multi, images, .. } => {
                for (i, img) in status.image_statuses.iter().enumerate() {
                    if images.len() <= i {
                        images.push(ImageBars::new(multi, if n > 1 { Some(i) } else { None }));
                    }
                    images[i].show(multi, img);
                }
            }
            View::Lines { last, .. } => {
                let mut changed = Vec::new();
                for (i, img) in status.image_statuses.iter().enumerate() {
                    let line = image_line(img);
                    if last.get(i) != Some(&line) {
                        if last.len() <= i {
                            last.resize(i + 1, String::new());
                        }
                        last[i] = line.clone();
                        changed.push(if n > 1 {
                            format!("image {i}: {line}")
                        } else {
                            line
                        });
                    }
                }
                for line in changed {
                    self.say(&line, true);
                }
            }
        }
    }

    fn job(&self, job: &JobEventData) {
        let short: String = job.job.to_string().chars().take(8).collect();
        self.say(
            &format!("job {} ({short}): {}", job.job_type, job.state),
            true,
        );
    }

    fn log(&self, lines: &[String]) {
        for l in lines {
            self.say(l, true);
        }
    }

    fn finish(&mut self) {
        if let View::Bars { images, .. } = self {
            for bars in images.iter() {
                bars.pipelines.abandon();
                if let Some(s) = &bars.stages {
                    s.abandon();
                }
            }
            // The bars stay on screen; what follows starts below them.
            if !images.is_empty() {
                eprintln!();
            }
            images.clear();
        }
    }
}
