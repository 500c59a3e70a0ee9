//! `kiln`: the command line of the kiln image build service.

mod blueprint;
mod boot;
mod compose;
mod compose_diff;
mod compose_request;
mod composer_api;
mod depsolve;
mod follow;
mod image_diff;
mod login;
mod manifest;
mod sse;
mod term;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kiln", version, about = "Build OS images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// One variant per subcommand.
#[derive(Subcommand)]
enum Command {
    /// Build images on a composer: start, follow, inspect and cancel composes.
    Compose(compose::ComposeArgs),
    /// Blueprints stored in the composer: push, list, show, delete, compose.
    Blueprint(blueprint::BlueprintArgs),
    /// What the cluster's nodes boot: publish a stored image, roll back, show.
    Boot(boot::BootArgs),
    /// Compute the exact package set for a list of packages.
    Depsolve(depsolve::DepsolveArgs),
    /// Work with osbuild v2 manifests.
    Manifest(manifest::ManifestArgs),
    /// Work with built artifacts: explain how two builds of one manifest differ.
    Image(image_diff::ImageArgs),
    /// Log in to the composer's OpenID provider; compose and blueprint then use the token.
    ///
    /// A person approves the login in a browser (the device flow); a script
    /// logs in with its client's secret (client credentials). The token is
    /// cached (mode 0600) and renewed when it is about to expire.
    Login(login::LoginArgs),
    /// Forget a login's cached token (the newest, the one --login-config describes, or --all).
    Logout(login::LogoutArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kiln: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Compose(args) => runtime.block_on(compose::run(args)),
        Command::Blueprint(args) => runtime.block_on(blueprint::run(args)),
        Command::Boot(args) => runtime.block_on(boot::run(args)),
        Command::Depsolve(args) => runtime.block_on(depsolve::run(args)),
        Command::Manifest(args) => runtime.block_on(manifest::run(args)),
        Command::Image(args) => Ok(image_diff::run(args)),
        Command::Login(args) => runtime.block_on(login::login(args)),
        Command::Logout(args) => runtime.block_on(login::logout(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln: {e:#}");
            ExitCode::FAILURE
        }
    }
}
