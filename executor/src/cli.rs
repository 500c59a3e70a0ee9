//! The `kiln-osbuild` command line: osbuild's contract, so that a kiln
//! worker can run it or real `osbuild` alike. `kiln-osbuild` and
//! `kiln-worker osbuild` both run [`main`].
//!
//! Exit status: 0 success, 1 build failure, 2 invalid manifest or usage.

use crate::{build, manifest, monitor, sandbox, stages, store, userns};

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kiln_api::osbuild::{
    BuildError, BuildOutput, ErrorDetails, FailedStage, PrivateKeys, StageLog, StageLogs,
};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "kiln-osbuild",
    version,
    about = "Build operating system images from osbuild v2 manifests",
    long_about = "Build operating system images from osbuild v2 manifests.\n\n\
        Sources are fetched into the store and checked against their checksums; every stage runs \
        in a bubblewrap sandbox (no network, the build root read-only, the tree writable) and its \
        tree is kept in the store under the stage's id, so an unchanged manifest rebuilds without \
        running a stage. Exit status: 0 success, 1 build failure, 2 invalid manifest."
)]
struct Cli {
    /// The manifest file, or `-` for standard input.
    manifest: String,
    /// Directory of the object store and the source cache.
    #[arg(long, default_value = ".osbuild")]
    store: PathBuf,
    /// Pipeline whose tree goes to the output directory (repeatable).
    #[arg(long = "export")]
    exports: Vec<String>,
    /// Where exported pipelines are written, one directory each.
    #[arg(long = "output-directory")]
    output_directory: Option<PathBuf>,
    /// Stage id or pipeline name to commit to the store (repeatable).
    #[arg(long = "checkpoint")]
    checkpoints: Vec<String>,
    /// Bound the store to this size after the build (bytes, or with a unit: 20GiB, 500M).
    #[arg(long = "cache-max-size", value_parser = parse_size)]
    cache_max_size: Option<u64>,
    /// Print the result as JSON on standard output.
    #[arg(long)]
    json: bool,
    /// Progress monitor: `JSONSeqMonitor` (RFC 7464 records on --monitor-fd) or `NullMonitor`.
    #[arg(long)]
    monitor: Option<String>,
    /// File descriptor the monitor writes to.
    #[arg(long = "monitor-fd")]
    monitor_fd: Option<i32>,
    /// Print the manifest with every stage's id, build nothing.
    #[arg(long)]
    inspect: bool,
    /// Pass this variable of kiln-osbuild's environment on to every stage
    /// (repeatable; stages otherwise see only PATH, LC_ALL, HOME and
    /// SOURCE_DATE_EPOCH). For testing tools' behaviour, such as
    /// `faketime`'s `LD_PRELOAD` and `FAKETIME`; the worker sets none.
    #[arg(long = "stage-env", value_parser = parse_env_name)]
    stage_env: Vec<String>,
}

/// A variable name bubblewrap can set: `[A-Za-z_][A-Za-z0-9_]*`.
fn parse_env_name(s: &str) -> Result<String, String> {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an environment variable name"))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    if s == "unlimited" {
        return Ok(u64::MAX);
    }
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (like 20GiB, 500M or 1048576)"))?;
    let mult: u64 = match unit {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("kiln-osbuild: writing the result: {e}"),
    }
}

fn invalid(errors: &[manifest::ValidationError], as_json: bool) -> ExitCode {
    if as_json {
        print_json(&manifest::validation_report(errors));
    } else {
        eprintln!("invalid manifest:");
        for e in errors {
            eprintln!("  {}: {}", e.dotted(), e.message);
        }
    }
    ExitCode::from(2)
}

/// The stage side of the sandbox re-executes the running binary as
/// `BINARY __stage ARGS`; a binary that embeds the executor calls this first.
pub fn stage_entry(argv: &[String]) -> Option<ExitCode> {
    if argv.get(1).map(String::as_str) == Some("__stage") {
        let code = stages::stage_main(argv.get(2).map(String::as_str).unwrap_or(""));
        return Some(ExitCode::from(code as u8));
    }
    None
}

/// The request id in `KILN_REQUEST_ID`: none when unset, an error when set
/// to anything that is not a request id (`kiln_api::request_id`).
fn request_id_from_env() -> Result<Option<kiln_api::request_id::RequestId>, ()> {
    request_id_from(std::env::var_os(kiln_api::request_id::ENV))
}

fn request_id_from(
    value: Option<std::ffi::OsString>,
) -> Result<Option<kiln_api::request_id::RequestId>, ()> {
    match value {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .and_then(kiln_api::request_id::RequestId::parse)
            .map(Some)
            .ok_or(()),
    }
}

/// Runs the command line `argv` (program name first).
pub fn main(argv: Vec<String>) -> ExitCode {
    if let Some(code) = stage_entry(&argv) {
        return code;
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let registered = unsafe {
            signal_hook::low_level::register(sig, || {
                sandbox::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst)
            })
        };
        if let Err(e) = registered {
            eprintln!("kiln-osbuild: cannot handle signal {sig}: {e}");
            return ExitCode::from(1);
        }
    }
    let text = if cli.manifest == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("kiln-osbuild: standard input: {e}");
            return ExitCode::from(2);
        }
        s
    } else {
        match std::fs::read_to_string(&cli.manifest) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kiln-osbuild: {}: {e}", cli.manifest);
                return ExitCode::from(2);
            }
        }
    };
    let doc: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let err = manifest::ValidationError::new(&[], format!("not JSON: {e}"));
            return invalid(&[err], cli.json);
        }
    };
    let parsed = match manifest::parse(&doc) {
        Ok(m) => m,
        Err(errors) => return invalid(&errors, cli.json),
    };
    if cli.inspect {
        return match kiln_manifests::inspect(&doc) {
            Ok(v) => {
                print_json(&v);
                ExitCode::SUCCESS
            }
            Err(e) => invalid(
                &[manifest::ValidationError::new(&[], e.to_string())],
                cli.json,
            ),
        };
    }
    let mut usage = Vec::new();
    for e in &cli.exports {
        if !parsed.pipelines.iter().any(|p| &p.name == e) {
            usage.push(manifest::ValidationError::new(
                &[json!("--export")],
                format!("there is no pipeline named {e:?} to export"),
            ));
        }
    }
    if !cli.exports.is_empty() && cli.output_directory.is_none() {
        usage.push(manifest::ValidationError::new(
            &[json!("--output-directory")],
            "--export needs --output-directory",
        ));
    }
    if !usage.is_empty() {
        return invalid(&usage, cli.json);
    }
    // The request id the worker handed down, first on stderr so that the
    // build's log names the API call it came from. Checked like at the
    // composer's edge: anything else in the variable is not repeated.
    match request_id_from_env() {
        Ok(Some(id)) => eprintln!("kiln-osbuild: request_id={id}"),
        Ok(None) => {}
        Err(()) => eprintln!(
            "kiln-osbuild: ignoring {}: not a request id",
            kiln_api::request_id::ENV
        ),
    }
    // Everything from here on runs as root of the build namespace, never
    // as root of the host (see `userns`).
    if !userns::inside() {
        let entered = userns::preflight().and_then(|host| userns::enter(&host));
        if let Err(e) = entered {
            eprintln!("kiln-osbuild: {e}");
            return ExitCode::from(1);
        }
    }
    let monitor_fd = match cli.monitor.as_deref() {
        None | Some("NullMonitor") | Some("LogMonitor") => None,
        Some("JSONSeqMonitor") => match cli.monitor_fd {
            Some(fd) => Some(fd),
            None => {
                eprintln!("kiln-osbuild: --monitor JSONSeqMonitor needs --monitor-fd");
                return ExitCode::from(2);
            }
        },
        Some(other) => {
            eprintln!(
                "kiln-osbuild: unknown monitor {other:?} (JSONSeqMonitor, LogMonitor, NullMonitor)"
            );
            return ExitCode::from(2);
        }
    };
    let monitor = match monitor::Monitor::new(monitor_fd, !cli.json) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("kiln-osbuild: --monitor-fd: {e}");
            return ExitCode::from(2);
        }
    };
    let store = match store::Store::open(&cli.store) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kiln-osbuild: store {}: {e}", cli.store.display());
            return ExitCode::from(1);
        }
    };
    let opts = build::BuildOptions {
        exports: cli.exports.clone(),
        checkpoints: cli.checkpoints.clone(),
        output_dir: cli.output_directory.clone(),
        // A name kiln-osbuild's environment does not set is left unset.
        stage_env: cli
            .stage_env
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.clone(), v)))
            .collect(),
    };
    let report = build::build(&parsed, &store, &opts, &monitor);
    if let Some(max) = cli.cache_max_size {
        if let Err(e) = store.evict_to(max) {
            eprintln!("kiln-osbuild: evicting from the store: {e}");
        }
    }
    let mut result = result_json(&report);
    if let BuildOutput::Result { store_bytes, .. } | BuildOutput::Error { store_bytes, .. } =
        &mut result
    {
        *store_bytes = Some(store::disk_usage(store.root()));
    }
    if cli.json {
        print_json(&result);
    } else if let Some(f) = &report.failure {
        eprintln!("kiln-osbuild: build failed: {}", failure_text(f));
    } else {
        eprintln!("kiln-osbuild: build succeeded");
    }
    if report.failure.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn failure_text(f: &build::Failure) -> String {
    match f {
        build::Failure::Source(e) => format!("source {e}"),
        build::Failure::Stage { pipeline, stage } => format!(
            "pipeline {pipeline}, stage {} ({}): {}",
            stage.kind,
            stage.id,
            stage.error.as_deref().unwrap_or("failed")
        ),
        build::Failure::Interrupted => "interrupted".into(),
        build::Failure::PrivateKeys {
            export,
            pipeline,
            paths,
        } => format!(
            "refusing to export {export}: the tree of pipeline {pipeline} holds private key \
             material at {} (a key meant to be in the image is listed in the pipeline's \
             kiln.identity.clean stage, option keep-private-keys)",
            paths.join(", ")
        ),
        build::Failure::Internal(e) => e.clone(),
    }
}

/// The result object, in osbuild's v2 shape.
fn result_json(report: &build::Report) -> BuildOutput {
    let log: StageLogs = report
        .log
        .iter()
        .map(|(name, stages)| {
            let entries = stages
                .iter()
                .map(|s| StageLog {
                    id: s.id.clone(),
                    kind: s.kind.clone(),
                    output: s.output.clone(),
                    success: s.success,
                    // Only a failed stage reports its error.
                    error: if s.success { None } else { s.error.clone() },
                })
                .collect();
            (name.clone(), entries)
        })
        .collect();
    let error =
        |kind: &str, reason: Option<String>, details: Option<ErrorDetails>| BuildOutput::Error {
            success: false,
            error: BuildError {
                kind: kind.into(),
                reason,
                details: details.map(Box::new),
            },
            log: log.clone(),
            store_bytes: None,
        };
    match &report.failure {
        None => BuildOutput::Result {
            success: true,
            metadata: report.metadata.clone(),
            log,
            store_bytes: None,
        },
        Some(build::Failure::Stage { stage, .. }) => error(
            "org.osbuild.error.stage",
            None,
            Some(ErrorDetails {
                stage: Some(FailedStage {
                    id: stage.id.clone(),
                    kind: stage.kind.clone(),
                    output: stage.output.clone(),
                    error: stage.error.clone(),
                }),
                ..Default::default()
            }),
        ),
        Some(build::Failure::Source(e)) => error(
            "org.osbuild.error.sources",
            Some(e.reason.clone()),
            Some(ErrorDetails {
                checksum: Some(e.checksum.clone()),
                ..Default::default()
            }),
        ),
        Some(
            f @ build::Failure::PrivateKeys {
                export,
                pipeline,
                paths,
            },
        ) => error(
            "kiln.error.private-keys",
            Some(failure_text(f)),
            Some(ErrorDetails {
                private_keys: Some(PrivateKeys {
                    export: export.clone(),
                    pipeline: pipeline.clone(),
                    paths: paths.clone(),
                }),
                ..Default::default()
            }),
        ),
        Some(f) => error("org.osbuild.error", Some(failure_text(f)), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_env_takes_only_variable_names() {
        assert_eq!(parse_env_name("LD_PRELOAD").unwrap(), "LD_PRELOAD");
        assert_eq!(parse_env_name("_x1").unwrap(), "_x1");
        for bad in ["", "1X", "A=B", "A B", "Ä"] {
            assert!(parse_env_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_id_is_taken_from_the_environment_only_when_it_is_one() {
        use std::os::unix::ffi::OsStringExt;
        assert_eq!(request_id_from(None), Ok(None));
        assert_eq!(
            request_id_from(Some("req-1.a:b_c".into()))
                .unwrap()
                .unwrap()
                .as_str(),
            "req-1.a:b_c"
        );
        for bad in ["", "a b", "a\nrequest_id=forged", "x=y", &"x".repeat(129)] {
            assert_eq!(request_id_from(Some(bad.into())), Err(()), "{bad:?}");
        }
        let not_utf8 = std::ffi::OsString::from_vec(vec![0x66, 0xff]);
        assert_eq!(request_id_from(Some(not_utf8)), Err(()));
    }
}
