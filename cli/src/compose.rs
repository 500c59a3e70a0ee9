//! `kiln compose`: submit composes to a composer, follow them, inspect them.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use kiln_api::compose::ComposeId;
use kiln_api::jobs::JobResult;
use kiln_api::status::{
    ComposeList, ComposeLogs, ComposeStatus, ComposeStatusValue, ImageStatus, JobLog,
};
use serde_json::Value;

use crate::compose_request::{self, ImageFlags};
use crate::composer_api::{Composer, Connection};
use crate::follow::{self, image_status_word, upload_lines, FollowOptions};
use crate::term::shown;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// For people: tables, progress, a summary.
    Text,
    /// For scripts: the composer's answers as JSON on standard output.
    Json,
}

const EXAMPLES: &str = "\
Examples:
  # Build a PXE image and watch it (bars on a terminal, lines in a pipe):
  kiln compose start --distribution debian-12 --arch x86_64 --image-type pxe --wait

  # The same with a blueprint, uploaded to S3, from a script:
  id=$(kiln compose start --distribution debian-12 --arch x86_64 --image-type disk \\
         --blueprint node.toml --target aws.s3:us-east-1)
  kiln compose wait \"$id\" --output json > result.json

  # A full Cloud API request (several images, customizations):
  kiln compose start --request request.json

  kiln compose list
  kiln compose status ID
  kiln compose cancel ID

  # The packages the newer build added, removed or changed:
  kiln compose diff OLD_ID NEW_ID

Exit status: 0 when the command (or the compose waited for) succeeded,
1 when it failed; errors name the field the composer refused.";

#[derive(Args)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct ComposeArgs {
    #[command(flatten)]
    connection: Connection,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true, help_heading = "Composer")]
    output: Output,
    #[command(subcommand)]
    command: ComposeCommand,
}

#[derive(Subcommand)]
enum ComposeCommand {
    /// Submit a compose and print its id; with --wait, follow it to the end.
    ///
    /// Either give a whole request (--request) or describe one image with
    /// --distribution, --arch and --image-type, plus optional blueprint,
    /// repositories and targets. The composer checks the request and names
    /// the field it refuses.
    ///
    /// Prints the id (--output json: the composer's answer, {id, kind, href});
    /// with --wait, then what `kiln compose wait` prints.
    Start(StartArgs),
    /// Show the status of a compose: each image's phase, progress, uploads and error.
    Status {
        /// The compose id, as `start` printed it.
        id: String,
    },
    /// List composes, newest first.
    List {
        /// Page, from 0.
        #[arg(long, default_value_t = 0)]
        page: u64,
        /// Composes per page (at most 1000).
        #[arg(long, default_value_t = 100)]
        size: u64,
    },
    /// Show the jobs of a compose, how each ended, and the build's log.
    ///
    /// Each job (depsolve, manifest, build) with its state and reason; the
    /// build's result: uploads, the kernel command line of a pxe image, and
    /// the per-stage log once the build finished. For the live log lines of
    /// a running build: `kiln compose wait ID --follow-logs`.
    Logs {
        /// The compose id.
        id: String,
    },
    /// Cancel a compose in any phase; its jobs stop and it ends as canceled.
    Cancel {
        /// The compose id.
        id: String,
    },
    /// Follow a compose until it ends, as `start --wait` does.
    ///
    /// Shows progress (bars on a terminal, a line per change otherwise),
    /// then where each image went and, for pxe, the kernel command line.
    /// Exits 0 when the compose succeeded, 1 when it failed or was canceled,
    /// with the reason (and each failed upload's) on standard error.
    /// With --output json, standard output is one object:
    /// {"status": <the final ComposeStatus>, "kernel_cmdlines": [<per image, or null>]}.
    Wait {
        /// The compose id.
        id: String,
        #[command(flatten)]
        follow: FollowArgs,
    },
    /// Delete a finished compose and its jobs (cancel a running one first).
    Delete {
        /// The compose id.
        id: String,
    },
    /// List the packages added, removed and changed from one build to another.
    ///
    /// Reads both composes' SBOMs (GET /composes/{id}/sboms: what each
    /// image's package database held after its build) and prints one line
    /// per package that differs: `+ NAME VERSION ARCH` added, `- NAME
    /// VERSION ARCH` removed, `~ NAME OLD -> NEW ARCH` changed; nothing
    /// when the package sets are the same. With --output json: {"old",
    /// "new", "image", "added", "removed", "changed"}. Both builds must have
    /// succeeded.
    Diff {
        /// The older compose's id.
        old: String,
        /// The newer compose's id.
        new: String,
        /// Which image of each compose, in request order.
        #[arg(long, default_value_t = 0)]
        image: usize,
    },
}

#[derive(Args)]
struct FollowArgs {
    /// Print the build's log lines as they arrive (for `start`, implies --wait).
    #[arg(long)]
    follow_logs: bool,
}

const IMAGE_FLAGS: [&str; 7] = [
    "distribution",
    "arch",
    "image_type",
    "blueprint",
    "repositories",
    "targets",
    "size",
];

#[derive(Args)]
struct StartArgs {
    /// A whole compose request (JSON, the Cloud API's ComposeRequest), or
    /// `-` for standard input. Not together with the image flags.
    #[arg(long, value_name = "FILE", conflicts_with_all = IMAGE_FLAGS)]
    request: Option<PathBuf>,
    /// Distribution, as the composer's GET /distributions lists it (debian-12).
    #[arg(long, required_unless_present = "request")]
    distribution: Option<String>,
    /// Image architecture: x86_64 or aarch64.
    #[arg(long, required_unless_present = "request")]
    arch: Option<String>,
    /// Image type: tar, pxe, disk, oci (as the distribution offers).
    #[arg(long, required_unless_present = "request")]
    image_type: Option<String>,
    /// Blueprint with the image's customizations (TOML, or JSON when named *.json).
    #[arg(long, value_name = "FILE")]
    blueprint: Option<PathBuf>,
    /// A repository to build from instead of the distribution's own:
    /// 'URL SUITE COMPONENT...' for Debian ('http://deb.debian.org/debian
    /// bookworm main'), 'URL' for RPM. Repeat for several.
    #[arg(long = "repository", value_name = "REPO")]
    repositories: Vec<String>,
    /// Where the image goes; repeat for several (default: local).
    /// `local`, `aws.s3:REGION`, `gcp:REGION[,bucket=B]`,
    /// `azure:tenant_id=T,subscription_id=S,resource_group=G[,location=L]`;
    /// more options as `,key=value`. Credentials are the worker's.
    #[arg(long = "target", value_name = "TARGET")]
    targets: Vec<String>,
    /// Image size in bytes (default: the image type's minimum).
    #[arg(long)]
    size: Option<u64>,
    /// Follow the compose until it ends, as `kiln compose wait` does.
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    follow: FollowArgs,
}

pub(crate) async fn run(args: ComposeArgs) -> anyhow::Result<ExitCode> {
    let composer = Composer::connect(&args.connection).await?;
    let output = args.output;
    match args.command {
        ComposeCommand::Start(start_args) => start(&composer, output, start_args).await,
        ComposeCommand::Status { id } => status(&composer, output, &id).await,
        ComposeCommand::List { page, size } => list(&composer, output, page, size).await,
        ComposeCommand::Logs { id } => logs(&composer, output, &id).await,
        ComposeCommand::Cancel { id } => cancel(&composer, output, &id).await,
        ComposeCommand::Delete { id } => delete(&composer, output, &id).await,
        ComposeCommand::Diff { old, new, image } => {
            let (old, new) = (compose_id(&old)?, compose_id(&new)?);
            crate::compose_diff::diff(&composer, output, &old, &new, image).await
        }
        ComposeCommand::Wait { id, follow } => {
            let id = compose_id(&id)?;
            let opts = FollowOptions {
                output,
                follow_logs: follow.follow_logs,
            };
            follow::follow(&composer, &id, &opts).await
        }
    }
}

/// A compose id, checked before it becomes part of a URL.
fn compose_id(id: &str) -> anyhow::Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| anyhow::anyhow!("{id:?} is not a compose id (a UUID) (id)"))
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn read_request(path: &std::path::Path) -> anyhow::Result<Value> {
    let (text, name) = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the request from standard input")?;
        (s, "standard input".to_owned())
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        (text, path.display().to_string())
    };
    // Only the syntax here: the composer checks the fields and names them.
    serde_json::from_str(&text).with_context(|| format!("{name}: not JSON"))
}

async fn start(composer: &Composer, output: Output, a: StartArgs) -> anyhow::Result<ExitCode> {
    let request = match &a.request {
        Some(path) => read_request(path)?,
        None => {
            let blueprint = a
                .blueprint
                .as_deref()
                .map(crate::manifest::read_blueprint)
                .transpose()?;
            let req = compose_request::from_flags(&ImageFlags {
                distribution: a.distribution.as_deref().unwrap_or_default(),
                arch: a.arch.as_deref().unwrap_or_default(),
                image_type: a.image_type.as_deref().unwrap_or_default(),
                repositories: &a.repositories,
                targets: &a.targets,
                size: a.size,
                blueprint,
            })
            .map_err(anyhow::Error::msg)?;
            serde_json::to_value(&req)?
        }
    };
    let answer: Value = composer.post("/compose", &request).await?;
    let id: ComposeId = serde_json::from_value(answer.clone())
        .map_err(|e| anyhow::anyhow!("{}: not a compose id: {e}", composer.url("/compose")))?;
    if !(a.wait || a.follow.follow_logs) {
        match output {
            Output::Json => print_json(&answer)?,
            Output::Text => println!("{}", id.id),
        }
        return Ok(ExitCode::SUCCESS);
    }
    if output == Output::Text {
        println!("{}", id.id);
    }
    let opts = FollowOptions {
        output,
        follow_logs: a.follow.follow_logs,
    };
    follow::follow(composer, &id.id.to_string(), &opts).await
}

fn progress_cell(img: &ImageStatus) -> String {
    match &img.progress {
        None => "-".into(),
        Some(p) => match &p.subprogress {
            Some(s) => format!("{}/{} ({}/{} stages)", p.done, p.total, s.done, s.total),
            None => format!("{}/{}", p.done, p.total),
        },
    }
}

fn compose_word(s: &ComposeStatus) -> String {
    let word = serde_json::to_value(s.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if s.canceled {
        format!("{word} (canceled)")
    } else {
        word
    }
}

async fn status(composer: &Composer, output: Output, id: &str) -> anyhow::Result<ExitCode> {
    let id = compose_id(id)?;
    let value: Value = composer.get(&format!("/composes/{id}")).await?;
    if output == Output::Json {
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s: ComposeStatus = serde_json::from_value(value).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a compose status: {e}",
            composer.url(&format!("/composes/{id}"))
        )
    })?;
    println!("ID      {}", s.id);
    println!("STATUS  {}", compose_word(&s));
    println!();
    println!("{:<6} {:<12} PIPELINES", "IMAGE", "STATUS");
    for (i, img) in s.image_statuses.iter().enumerate() {
        println!(
            "{i:<6} {:<12} {}",
            image_status_word(img.status),
            progress_cell(img)
        );
        if let Some(e) = &img.error {
            println!("       error: {}", shown(&e.reason));
        }
        for u in img.upload_statuses.iter().flatten() {
            for line in upload_lines(u) {
                println!("       {}", shown(&line));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(
    composer: &Composer,
    output: Output,
    page: u64,
    size: u64,
) -> anyhow::Result<ExitCode> {
    let value: Value = composer
        .get(&format!("/composes/?page={page}&size={size}"))
        .await?;
    if output == Output::Json {
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let l: ComposeList = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}: not a compose list: {e}", composer.url("/composes/")))?;
    println!("{:<36}  {:<20}  IMAGES", "ID", "STATUS");
    for s in &l.items {
        let images: Vec<&str> = s
            .image_statuses
            .iter()
            .map(|i| image_status_word(i.status))
            .collect();
        println!(
            "{:<36}  {:<20}  {}",
            s.id,
            compose_word(s),
            images.join(",")
        );
    }
    println!("{} of {} composes", l.items.len(), l.total);
    Ok(ExitCode::SUCCESS)
}

async fn logs(composer: &Composer, output: Output, id: &str) -> anyhow::Result<ExitCode> {
    let id = compose_id(id)?;
    let path = format!("/composes/{id}/logs");
    let value: Value = composer.get(&path).await?;
    if output == Output::Json {
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let logs: ComposeLogs = serde_json::from_value(value)
        .map_err(|e| anyhow::anyhow!("{}: not a compose's logs: {e}", composer.url(&path)))?;
    for b in &logs.image_builds {
        println!("image {}", b.image);
        for job in &b.jobs {
            print_job_log(job);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One job of `kiln compose logs`: how it ended, its result's highlights,
/// and the executor's per-stage output.
fn print_job_log(job: &JobLog) {
    println!("  {} {}: {}", job.job_type, job.id, job.state);
    if let Some(reason) = job.reason.as_deref().filter(|r| !r.is_empty()) {
        println!("    reason: {}", shown(reason));
    }
    if let Some(l) = &job.log {
        let dropped = if l.dropped > 0 {
            format!(", the {} before them dropped", l.dropped)
        } else {
            String::new()
        };
        let growing = if l.complete { "" } else { ", still running" };
        println!("    log ({} lines{dropped}{growing}):", l.lines);
        for line in l.text.lines() {
            println!("      {}", shown(line));
        }
    }
    // A result this CLI cannot read (another kind, an older composer) shows
    // no highlights; `--output json` still has it whole.
    let (kernel_cmdline, uploads, log) = match job.result() {
        Some(Ok(JobResult::Manifest(m))) => (m.kernel_cmdline, Vec::new(), None),
        Some(Ok(JobResult::Build(b))) => (b.kernel_cmdline, b.uploads, b.log),
        _ => return,
    };
    if let Some(c) = kernel_cmdline {
        println!("    kernel command line: {}", shown(&c));
    }
    for u in &uploads {
        for line in upload_lines(u) {
            println!("    {}", shown(&line));
        }
    }
    for (pipeline, stages) in log.iter().flatten() {
        for stage in stages {
            println!(
                "    [{pipeline}] {}{}",
                stage.kind,
                if stage.success { "" } else { " (failed)" }
            );
            for line in stage.output.lines() {
                println!("      {}", shown(line));
            }
            if let Some(e) = stage.error.as_deref().filter(|e| !e.is_empty()) {
                println!("      error: {}", shown(e));
            }
        }
    }
}

async fn cancel(composer: &Composer, output: Output, id: &str) -> anyhow::Result<ExitCode> {
    let id = compose_id(id)?;
    let path = format!("/composes/{id}");
    let parse = |v: Value| -> anyhow::Result<ComposeStatus> {
        serde_json::from_value(v)
            .map_err(|e| anyhow::anyhow!("{}: not a compose status: {e}", composer.url(&path)))
    };
    // Canceling a finished compose changes nothing; say that it had ended.
    let before: Value = composer.get(&path).await?;
    let finished = parse(before.clone())?.status != ComposeStatusValue::Pending;
    let value = if finished {
        before
    } else {
        composer
            .post(&format!("{path}/cancel"), &serde_json::json!({}))
            .await?
    };
    if output == Output::Json {
        print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = parse(value)?;
    if finished {
        println!("compose {id} had already finished: {}", compose_word(&s));
    } else {
        println!("compose {id} canceled");
    }
    Ok(ExitCode::SUCCESS)
}

async fn delete(composer: &Composer, output: Output, id: &str) -> anyhow::Result<ExitCode> {
    let id = compose_id(id)?;
    let value: Value = composer.delete(&format!("/composes/{id}")).await?;
    match output {
        Output::Json => print_json(&value)?,
        Output::Text => println!("compose {id} deleted"),
    }
    Ok(ExitCode::SUCCESS)
}
