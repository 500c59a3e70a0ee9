//! `kiln blueprint`: blueprints stored in the composer, versioned by name,
//! and composes made from them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use kiln_api::blueprints::{BlueprintComposeRequest, BlueprintList, StoredBlueprint};
use kiln_api::compose::{ComposeId, ImageRequest};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::compose::Output;
use crate::compose_request::parse_targets;
use crate::composer_api::{Composer, Connection};
use crate::follow::{follow, FollowOptions};

#[derive(Args)]
pub(crate) struct BlueprintArgs {
    #[command(flatten)]
    connection: Connection,
    /// Output format: text for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: BlueprintCommand,
}

#[derive(Subcommand)]
enum BlueprintCommand {
    /// Store a blueprint (.toml or .json, naming its `distro`) as the next version of its name.
    Push { file: PathBuf },
    /// The latest version of every stored blueprint.
    List,
    /// A stored blueprint (the latest version, or --version N).
    Show {
        name: String,
        #[arg(long)]
        version: Option<i64>,
    },
    /// Delete every version of a blueprint.
    Delete { name: String },
    /// Build an image from a stored blueprint.
    Compose {
        name: String,
        /// A stored version (default: the latest).
        #[arg(long)]
        version: Option<i64>,
        #[arg(long)]
        arch: String,
        #[arg(long)]
        image_type: String,
        /// Where the image goes, as for `kiln compose start` (default: local).
        #[arg(long = "target", value_name = "TARGET")]
        targets: Vec<String>,
        /// Follow the compose to its end.
        #[arg(long)]
        wait: bool,
    },
}

/// An answer of the composer as its type; `what` names it in the error.
fn read<T: DeserializeOwned>(
    composer: &Composer,
    path: &str,
    what: &str,
    v: Value,
) -> anyhow::Result<T> {
    serde_json::from_value(v)
        .map_err(|e| anyhow::anyhow!("{}: not {what}: {e}", composer.url(path)))
}

pub(crate) async fn run(args: BlueprintArgs) -> anyhow::Result<ExitCode> {
    let composer = Composer::connect(&args.connection).await?;
    let json_out = args.output == Output::Json;
    let print = |v: &Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match args.command {
        BlueprintCommand::Push { file } => {
            let bp = crate::manifest::read_blueprint(&file)?;
            let answer: Value = composer.post("/blueprints", &bp).await?;
            if json_out {
                print(&answer)?;
            } else {
                let stored: StoredBlueprint =
                    read(&composer, "/blueprints", "a stored blueprint", answer)?;
                println!("{} version {}", stored.name, stored.version);
            }
        }
        BlueprintCommand::List => {
            let answer: Value = composer.get("/blueprints").await?;
            if json_out {
                print(&answer)?;
            } else {
                let list: BlueprintList =
                    read(&composer, "/blueprints", "a blueprint list", answer)?;
                println!(
                    "{:24} {:>7}  {:12} DESCRIPTION",
                    "NAME", "VERSION", "DISTRO"
                );
                for b in &list.blueprints {
                    println!(
                        "{:24} {:>7}  {:12} {}",
                        b.name,
                        b.version,
                        b.distro.as_deref().unwrap_or("-"),
                        b.description.as_deref().unwrap_or("")
                    );
                }
            }
        }
        BlueprintCommand::Show { name, version } => {
            let path = match version {
                Some(v) => format!("/blueprints/{}?version={v}", encode(&name)),
                None => format!("/blueprints/{}", encode(&name)),
            };
            let answer: Value = composer.get(&path).await?;
            if json_out {
                print(&answer)?;
            } else {
                let stored: StoredBlueprint = read(&composer, &path, "a stored blueprint", answer)?;
                println!(
                    "# {} version {} ({})",
                    stored.name,
                    stored.version,
                    stored
                        .created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                );
                println!("{}", serde_json::to_string_pretty(&stored.blueprint)?);
            }
        }
        BlueprintCommand::Delete { name } => {
            let done: Value = composer
                .delete(&format!("/blueprints/{}", encode(&name)))
                .await?;
            if json_out {
                print(&done)?;
            } else {
                println!("deleted {name}");
            }
        }
        BlueprintCommand::Compose {
            name,
            version,
            arch,
            image_type,
            targets,
            wait,
        } => {
            let targets = if targets.is_empty() {
                vec!["local".to_owned()]
            } else {
                targets
            };
            let upload_targets = parse_targets(&targets).map_err(anyhow::Error::msg)?;
            let body = BlueprintComposeRequest {
                version,
                image_request: Some(ImageRequest {
                    architecture: arch,
                    image_type,
                    repositories: None,
                    upload_targets,
                    upload_options: None,
                    size: None,
                }),
                image_requests: None,
            };
            let path = format!("/blueprints/{}/compose", encode(&name));
            let answer: Value = composer.post(&path, &body).await?;
            let id = read::<ComposeId>(&composer, &path, "a compose id", answer)?
                .id
                .to_string();
            if !wait {
                if json_out {
                    print(&json!({"id": id}))?;
                } else {
                    println!("{id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            eprintln!("compose {id}");
            return follow(
                &composer,
                &id,
                &FollowOptions {
                    output: args.output,
                    follow_logs: false,
                },
            )
            .await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A blueprint name as one URL path segment.
fn encode(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}
