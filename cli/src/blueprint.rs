//! `kiln blueprint`: blueprints stored in the composer, versioned by name,
//! and composes made from them.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::compose::Output;
use crate::compose_request::parse_target;
use crate::composer_api::Composer;
use crate::follow::{follow, FollowOptions};

#[derive(Args)]
pub struct BlueprintArgs {
    /// The composer's URL; the API path (/api/image-builder-composer/v2) is added.
    #[arg(
        long,
        env = "KILN_COMPOSER_URL",
        default_value = "http://127.0.0.1:8700",
        value_name = "URL",
        global = true
    )]
    composer: String,
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

pub async fn run(args: BlueprintArgs) -> anyhow::Result<ExitCode> {
    let composer = Composer::new(&args.composer)?;
    let json_out = args.output == Output::Json;
    let print = |v: &Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match args.command {
        BlueprintCommand::Push { file } => {
            let bp = crate::manifest::read_blueprint(&file)?;
            let stored: Value = composer
                .post("/blueprints", &serde_json::to_value(&bp)?)
                .await?;
            if json_out {
                print(&stored)?;
            } else {
                println!(
                    "{} version {}",
                    stored["name"].as_str().unwrap_or("?"),
                    stored["version"]
                );
            }
        }
        BlueprintCommand::List => {
            let list: Value = composer.get("/blueprints").await?;
            if json_out {
                print(&list)?;
            } else {
                println!(
                    "{:24} {:>7}  {:12} DESCRIPTION",
                    "NAME", "VERSION", "DISTRO"
                );
                for b in list["blueprints"].as_array().into_iter().flatten() {
                    println!(
                        "{:24} {:>7}  {:12} {}",
                        b["name"].as_str().unwrap_or(""),
                        b["version"],
                        b["distro"].as_str().unwrap_or("-"),
                        b["description"].as_str().unwrap_or("")
                    );
                }
            }
        }
        BlueprintCommand::Show { name, version } => {
            let path = match version {
                Some(v) => format!("/blueprints/{}?version={v}", encode(&name)),
                None => format!("/blueprints/{}", encode(&name)),
            };
            let stored: Value = composer.get(&path).await?;
            if json_out {
                print(&stored)?;
            } else {
                println!(
                    "# {} version {} ({})",
                    stored["name"].as_str().unwrap_or("?"),
                    stored["version"],
                    stored["created_at"].as_str().unwrap_or("")
                );
                print(&stored["blueprint"])?;
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
            let upload_targets = targets
                .iter()
                .map(|t| parse_target(t).map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut body = json!({"image_request": {"architecture": arch, "image_type": image_type, "upload_targets": upload_targets}});
            if let Some(v) = version {
                body["version"] = json!(v);
            }
            let id: Value = composer
                .post(&format!("/blueprints/{}/compose", encode(&name)), &body)
                .await?;
            let id = id["id"].as_str().unwrap_or_default().to_owned();
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
