//! `kiln depsolve`: solve on the command line, as a table or as JSON.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_depsolve::{DepsolveError, RepoConfig, RepoSet, Request, Solution, Source};

pub(crate) const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub(crate) struct DepsolveArgs {
    /// Target architecture (Debian name, e.g. amd64; mapped to x86_64 for rpm).
    #[arg(long)]
    arch: String,
    /// Repository, like an apt sources line:
    /// 'deb [signed-by=KEYRING] URL SUITE COMPONENT...' or 'rpm [signed-by=KEYRING] URL'
    /// (http, https or file URL). Repeat for several repositories.
    #[arg(long = "source", required = true)]
    sources: Vec<String>,
    /// Add Essential: yes and Priority: required packages (a base system).
    #[arg(long)]
    essential: bool,
    /// Follow Recommends too (off by default, like --no-install-recommends).
    #[arg(long)]
    recommends: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    output: Output,
    /// Keyring for sources without signed-by=.
    #[arg(long, default_value = DEBIAN_KEYRING)]
    keyring: PathBuf,
    /// Metadata cache directory.
    #[arg(long, env = "KILN_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Packages to install.
    #[arg(required = true)]
    packages: Vec<String>,
}

pub(crate) fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kiln/depsolve")
}

/// Opens the sources and solves: `Ok(Err(problems))` when the request
/// cannot be installed, `Err` when the repositories cannot be read.
pub(crate) async fn solve(
    sources: &[String],
    arch: &str,
    keyring: &std::path::Path,
    cache_dir: PathBuf,
    request: &Request,
) -> anyhow::Result<Result<Solution, Vec<String>>> {
    let sources = sources
        .iter()
        .map(|s| s.parse::<Source>())
        .collect::<Result<Vec<_>, _>>()?;
    let config = RepoConfig {
        arch: arch.to_owned(),
        sources,
        cache_dir,
        keyring: Some(keyring.to_owned()),
    };
    let set = RepoSet::open(config)
        .await
        .context("loading repositories")?;
    match set.solve(request) {
        Ok(solution) => Ok(Ok(solution)),
        Err(DepsolveError::Unsolvable { problems }) => Ok(Err(problems)),
        Err(e) => Err(e.into()),
    }
}

/// Prints why a request cannot be installed; the exit code says the same.
pub(crate) fn unsolvable(problems: &[String]) -> ExitCode {
    eprintln!("kiln: cannot install the requested packages:");
    for p in problems {
        eprintln!("  {p}");
    }
    ExitCode::from(2)
}

pub(crate) async fn run(args: DepsolveArgs) -> anyhow::Result<ExitCode> {
    let request = Request {
        packages: args.packages.clone(),
        essential: args.essential,
        recommends: args.recommends,
    };
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    match solve(&args.sources, &args.arch, &args.keyring, cache, &request).await? {
        Ok(solution) => {
            print_solution(&solution, args.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => Ok(unsolvable(&problems)),
    }
}

fn print_solution(solution: &Solution, output: Output) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            serde_json::to_writer(&mut out, solution)?;
            writeln!(out)?;
        }
        Output::Table => {
            let w = |f: fn(&kiln_depsolve::SolvedPackage) -> usize| {
                solution.packages.iter().map(f).max().unwrap_or(0)
            };
            let (nw, vw) = (w(|p| p.name.len()).max(4), w(|p| p.version.len()).max(7));
            writeln!(
                out,
                "{:nw$}  {:vw$}  {:6}  {:>10}",
                "NAME", "VERSION", "ARCH", "SIZE"
            )?;
            for p in &solution.packages {
                writeln!(
                    out,
                    "{:nw$}  {:vw$}  {:6}  {:>10}",
                    p.name, p.version, p.arch, p.size
                )?;
            }
            let total: u64 = solution.packages.iter().map(|p| p.size).sum();
            writeln!(
                out,
                "{} packages, {} bytes to download",
                solution.packages.len(),
                total
            )?;
        }
    }
    Ok(())
}
