//! `kiln boot`: what the cluster's nodes boot, straight from the boot image
//! store and the boot service (BSS, SMD): publish an image already in the
//! store to nodes, roll nodes back, show what they boot. Builds publish
//! through the `boot` upload target of a compose; this is for the admin's
//! later moves. The configuration file is worker.toml's `[boot]` table.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_boot::{BootConfig, ImageRef, ImageSource, NodeSelector, PublishRequest};

use crate::compose::Output;

#[derive(Args)]
pub(crate) struct BootArgs {
    /// The boot configuration (TOML: store, prefix, base_url, bss, smd), as
    /// the `[boot]` table of worker.toml.
    #[arg(
        long,
        env = "KILN_BOOT_CONFIG",
        default_value = "/etc/kiln/boot.toml",
        global = true
    )]
    config: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: BootCommand,
}

#[derive(Args)]
struct Nodes {
    /// Node xnames (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    xname: Vec<String>,
    /// Node MAC addresses.
    #[arg(long, value_delimiter = ',')]
    mac: Vec<String>,
    /// Node NIDs.
    #[arg(long, value_delimiter = ',')]
    nid: Vec<u32>,
    /// An SMD group label.
    #[arg(long)]
    group: Option<String>,
}

impl Nodes {
    fn selector(&self) -> anyhow::Result<NodeSelector> {
        let given = [
            !self.xname.is_empty(),
            !self.mac.is_empty(),
            !self.nid.is_empty(),
            self.group.is_some(),
        ];
        anyhow::ensure!(
            given.iter().filter(|g| **g).count() == 1,
            "name the nodes by exactly one of --xname, --mac, --nid or --group"
        );
        let s = if !self.xname.is_empty() {
            NodeSelector::xnames(&self.xname)
        } else if !self.mac.is_empty() {
            NodeSelector::macs(&self.mac)
        } else if !self.nid.is_empty() {
            NodeSelector::nids(&self.nid)
        } else {
            NodeSelector::group(self.group.as_deref().unwrap_or_default())
        };
        Ok(s?)
    }
}

#[derive(Subcommand)]
enum BootCommand {
    /// Point nodes at an image in the store (IMAGE/VERSION/ARCH, as `show` prints it).
    Publish {
        image: String,
        #[command(flatten)]
        nodes: Nodes,
        /// Appended to the image's kernel command line.
        #[arg(long, default_value = "")]
        extra_params: String,
        /// Print the changes, make none.
        #[arg(long)]
        dry_run: bool,
    },
    /// Put nodes back on the image they booted before kiln's last change.
    Rollback {
        #[command(flatten)]
        nodes: Nodes,
        /// Also when a node's BSS entry was changed outside kiln meanwhile.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        dry_run: bool,
    },
    /// What the nodes boot now, and which kiln image that is.
    Show {
        #[command(flatten)]
        nodes: Nodes,
    },
}

pub(crate) async fn run(args: BootArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config: BootConfig =
        toml::from_str(&text).with_context(|| format!("{}", args.config.display()))?;
    let deployer = config.deployer().map_err(anyhow::Error::msg)?;
    let json_out = args.output == Output::Json;
    match args.command {
        BootCommand::Publish {
            image,
            nodes,
            extra_params,
            dry_run,
        } => {
            let parts: Vec<&str> = image.split('/').collect();
            let [name, version, arch] = parts.as_slice() else {
                anyhow::bail!("{image:?}: name the image as IMAGE/VERSION/ARCH (image)");
            };
            let request = PublishRequest {
                image: ImageSource::Published(ImageRef {
                    image_name: name.to_string(),
                    version: version.to_string(),
                    arch: arch.to_string(),
                }),
                nodes: nodes.selector()?,
                extra_params,
            };
            let plan = if dry_run {
                deployer.dry_run(&request).await?
            } else {
                deployer.publish(&request).await?
            };
            show_plan(&plan, json_out, dry_run)?;
        }
        BootCommand::Rollback {
            nodes,
            force,
            dry_run,
        } => {
            let selector = nodes.selector()?;
            let plan = if dry_run {
                deployer.plan_rollback(&selector, force).await?
            } else {
                deployer.rollback(&selector, force).await?
            };
            show_plan(&plan, json_out, dry_run)?;
        }
        BootCommand::Show { nodes } => {
            let status = deployer.show(&nodes.selector()?).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                for n in status {
                    let image = n
                        .image
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "(not a kiln image)".into());
                    let kernel = n
                        .current
                        .and_then(|c| c.kernel)
                        .unwrap_or_else(|| "(no boot parameters)".into());
                    println!("{}  {image}  {kernel}", n.xname);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn show_plan(plan: &kiln_boot::Plan, json_out: bool, dry_run: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(plan)?);
    } else {
        if dry_run {
            println!("dry run: nothing was changed");
        }
        print!("{plan}");
    }
    Ok(())
}
