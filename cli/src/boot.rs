//! `kiln boot`: what the cluster's nodes boot, through the composer. Every
//! change (publish an image already in the boot store, a canary and its
//! promotion, roll back, their dry runs, release tags) and every read is a
//! boot change the composer checks against the
//! tenant's boot grants and a worker holding the boot service's
//! credentials runs; this command waits for it and prints the plan. The
//! history and the last known state of the nodes come from the composer's
//! database. Builds publish through a compose's `boot` target.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use kiln_api::boot::{
    BootChange, BootChangeId, BootChangeRequest, BootChangeState, BootChangeStatus, BootHistory,
    CanaryNodes, NodeBootList, NodeStatus,
};
use kiln_api::compose::BootNodes;

use crate::compose::Output;
use crate::composer_api::{Composer, Connection};

const EXAMPLES: &str = "Examples:
  kiln boot publish compute/20260122T072633Z-1a2b3c4d/x86_64 --group compute --extra-params ip=dhcp
  kiln boot publish compute/20260122T072633Z-1a2b3c4d/x86_64 --xname x1000c0s0b0n0 --dry-run
  kiln boot publish --compose 1a2b3c4d-0000-4000-8000-000000000000 --group compute
  kiln boot canary compute/20260122T072633Z-1a2b3c4d/x86_64 --group compute --count 2
  kiln boot promote --group compute
  kiln boot rollback --group compute
  kiln boot tag compute:2026.12 compute/20260122T072633Z-1a2b3c4d/x86_64
  kiln boot show --group compute
  kiln boot nodes
  kiln boot history --node x1000c0s0b0n0

Exit status: 0 when the change succeeded, 1 when it was refused or failed.";

#[derive(Args)]
#[command(after_long_help = EXAMPLES)]
pub(crate) struct BootArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long, value_enum, default_value_t = Output::Text, global = true, help_heading = "Composer")]
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
    /// The request's `nodes`; the composer checks it (exactly one kind,
    /// each value well formed) and names the field it refuses.
    fn request(self) -> BootNodes {
        let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
        BootNodes {
            xnames: some(self.xname),
            macs: some(self.mac),
            nids: (!self.nid.is_empty()).then_some(self.nid),
            group: self.group,
        }
    }
}

#[derive(Args)]
struct Wait {
    /// Print the change's id and return at once, without waiting for it.
    #[arg(long)]
    no_wait: bool,
    /// How long to wait for a worker to run the change, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

#[derive(Subcommand)]
enum BootCommand {
    /// Point nodes at an image in the store (IMAGE/VERSION/ARCH, as `show`
    /// prints it), or at the one a compose published (--compose ID): e.g. to
    /// promote what a test group booted to the whole partition.
    Publish {
        #[arg(required_unless_present = "compose", conflicts_with = "compose")]
        image: Option<String>,
        /// The compose whose boot target published the image.
        #[arg(long)]
        compose: Option<uuid::Uuid>,
        #[command(flatten)]
        nodes: Nodes,
        /// Appended to the image's kernel command line.
        #[arg(long, default_value = "")]
        extra_params: String,
        /// Print the changes, make none.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Publish an image to part of an SMD group first, at the canary
    /// priority: named members (--xname) or the first --count in xname order.
    Canary {
        #[arg(required_unless_present = "compose", conflicts_with = "compose")]
        image: Option<String>,
        /// The compose whose boot target published the image.
        #[arg(long)]
        compose: Option<uuid::Uuid>,
        /// The SMD group the canary is part of.
        #[arg(long)]
        group: String,
        /// The canary nodes, members of the group (repeat or comma-separate).
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "count",
            conflicts_with = "count"
        )]
        xname: Vec<String>,
        /// How many of the group's nodes, the first in xname order.
        #[arg(long)]
        count: Option<u32>,
        /// Appended to the image's kernel command line.
        #[arg(long, default_value = "")]
        extra_params: String,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Move the whole group to exactly what its canary boots (same store
    /// keys, nothing rebuilt).
    Promote {
        #[arg(long)]
        group: String,
        /// The canary's deployment id (default: the group's latest canary).
        #[arg(long)]
        canary: Option<String>,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Name a published image with a release tag, RELEASE:VERSION.
    Tag {
        /// e.g. compute:2026.12
        tag: String,
        #[arg(required_unless_present = "compose", conflicts_with = "compose")]
        image: Option<String>,
        /// The compose whose boot target published the image.
        #[arg(long)]
        compose: Option<uuid::Uuid>,
        /// Move the tag when it names another image.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Undo kiln's newest change still in effect on the nodes (a publish,
    /// a canary or a promotion); again for the one before.
    Rollback {
        #[command(flatten)]
        nodes: Nodes,
        /// Also when a node's BSS entry was changed outside kiln meanwhile.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Read what the nodes boot now (through a worker), and which kiln image that is.
    Show {
        #[command(flatten)]
        nodes: Nodes,
        #[command(flatten)]
        wait: Wait,
    },
    /// What the nodes boot as last read or set, from the composer's records.
    Nodes,
    /// Every change of what nodes boot, newest first: who, what, old and new parameters.
    History {
        /// Only changes of this node (xname).
        #[arg(long)]
        node: Option<String>,
        /// How many entries.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// A boot change's status (the id `publish --no-wait` printed).
    Status { id: uuid::Uuid },
    /// Cancel a boot change no worker has started.
    Cancel { id: uuid::Uuid },
}

pub(crate) async fn run(args: BootArgs) -> anyhow::Result<ExitCode> {
    let composer = Composer::connect(&args.connection).await?;
    let json_out = args.output == Output::Json;
    let (request, wait) = match args.command {
        BootCommand::Publish {
            image,
            compose,
            nodes,
            extra_params,
            dry_run,
            wait,
        } => (
            BootChangeRequest::Publish {
                image,
                compose_id: compose,
                nodes: nodes.request(),
                extra_params,
                dry_run,
            },
            wait,
        ),
        BootCommand::Canary {
            image,
            compose,
            group,
            xname,
            count,
            extra_params,
            dry_run,
            wait,
        } => (
            BootChangeRequest::Canary {
                image,
                compose_id: compose,
                group,
                canary: CanaryNodes {
                    xnames: (!xname.is_empty()).then_some(xname),
                    count,
                },
                extra_params,
                dry_run,
            },
            wait,
        ),
        BootCommand::Promote {
            group,
            canary,
            dry_run,
            wait,
        } => (
            BootChangeRequest::Promote {
                group,
                canary,
                dry_run,
                image: None,
            },
            wait,
        ),
        BootCommand::Tag {
            tag,
            image,
            compose,
            force,
            wait,
        } => (
            BootChangeRequest::Tag {
                image,
                compose_id: compose,
                tag,
                force,
            },
            wait,
        ),
        BootCommand::Rollback {
            nodes,
            force,
            dry_run,
            wait,
        } => (
            BootChangeRequest::Rollback {
                nodes: nodes.request(),
                force,
                dry_run,
            },
            wait,
        ),
        BootCommand::Show { nodes, wait } => (
            BootChangeRequest::Show {
                nodes: nodes.request(),
            },
            wait,
        ),
        BootCommand::Nodes => {
            let list: NodeBootList = composer.get("/boot/nodes").await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for n in &list.items {
                    print_node(&n.status);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        BootCommand::History { node, limit } => {
            let mut path = format!("/boot/history?size={}", limit.clamp(1, 1000));
            if let Some(x) = node {
                path.push_str(&format!(
                    "&node={}",
                    url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>()
                ));
            }
            let history: BootHistory = composer.get(&path).await?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                for entry in &history.items {
                    print!("{entry}");
                }
                if history.total > history.items.len() as i64 {
                    println!("({} of {} changes)", history.items.len(), history.total);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        BootCommand::Status { id } => {
            let status: BootChangeStatus = composer.get(&format!("/boot/changes/{id}")).await?;
            return show(&status, json_out);
        }
        BootCommand::Cancel { id } => {
            let status: BootChangeStatus = composer
                .post(
                    &format!("/boot/changes/{id}/cancel"),
                    &serde_json::json!({}),
                )
                .await?;
            return show(&status, json_out);
        }
    };
    let created: BootChangeId = composer.post("/boot/changes", &request).await?;
    if wait.no_wait {
        if json_out {
            println!("{}", serde_json::to_string_pretty(&created)?);
        } else {
            println!("{}", created.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.timeout);
    let path = format!("/boot/changes/{}", created.id);
    let mut pause = Duration::from_millis(100);
    loop {
        let status: BootChangeStatus = composer.get(&path).await?;
        let pending = matches!(
            status.status,
            BootChangeState::Pending | BootChangeState::Running
        );
        if !pending {
            return show(&status, json_out);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "boot change {} is still {:?} after {} s: is a worker with job_types = [\"boot\"] running? \
                 (kiln boot status {0}; kiln boot cancel {0})",
                created.id,
                status.status,
                wait.timeout
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

fn show(status: &BootChangeStatus, json_out: bool) -> anyhow::Result<ExitCode> {
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(status).context("writing the status")?
        );
    } else {
        let dry = match &status.change {
            BootChange::Publish { dry_run, .. }
            | BootChange::Canary { dry_run, .. }
            | BootChange::Promote { dry_run, .. }
            | BootChange::Rollback { dry_run, .. } => *dry_run,
            BootChange::Show { .. } | BootChange::Tag { .. } => false,
        };
        match status.status {
            BootChangeState::Success => {
                if dry {
                    println!("dry run: nothing was changed");
                }
                if let Some(plan) = &status.plan {
                    print!("{plan}");
                } else {
                    for n in &status.nodes {
                        print_node(n);
                    }
                }
            }
            other => {
                let reason = status.reason.as_deref().unwrap_or("");
                println!("boot change {}: {other:?} {reason}", status.id);
                // A change that failed part way: which nodes moved.
                if let Some(plan) = &status.plan {
                    print!("{plan}");
                }
            }
        }
    }
    Ok(if status.status == BootChangeState::Success {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_node(n: &NodeStatus) {
    let image = n
        .image
        .as_ref()
        .map(|i| i.to_string())
        .unwrap_or_else(|| "(not a kiln image)".into());
    let kernel = n
        .current
        .as_ref()
        .and_then(|c| c.kernel.clone())
        .unwrap_or_else(|| "(no boot parameters)".into());
    let tags: Vec<String> = n.tags.iter().map(ToString::to_string).collect();
    let tags = if tags.is_empty() {
        String::new()
    } else {
        format!("  tags {}", tags.join(","))
    };
    let compose = n
        .compose_id
        .map(|c| format!("  compose {c}"))
        .unwrap_or_default();
    println!("{}  {image}{tags}{compose}  {kernel}", n.xname);
}
