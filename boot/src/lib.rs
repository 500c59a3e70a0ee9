//! kiln's boot image delivery: PXE images (kernel, initrd, dracut
//! dmsquash-live squashfs) go to the boot image store under versioned keys
//! that are never overwritten, and OpenCHAMI's boot service (BSS or
//! boot-service) is told which nodes boot them; every change is recorded so
//! it can be rolled back, and images can carry release tags.
//!
//! Entry points: [`Deployer`] ([`Deployer::publish`], [`Deployer::dry_run`],
//! [`Deployer::plan_canary`], [`Deployer::plan_promote`],
//! [`Deployer::rollback`], [`Deployer::tag`], [`Deployer::show`]), built from
//! a [`BootStore`] (any `object_store` store plus its public base URL), a
//! [`BootService`] (a [`BssClient`] or a [`BootServiceClient`]) and an
//! [`SmdClient`]. Nodes are named by a [`NodeSelector`]. The key layout and the
//! history design are described in the crate README.

pub mod boot_service;
pub mod bss;
pub mod cmdline;
pub mod config;
pub mod deploy;
pub mod error;
pub mod history;
mod http;
pub mod image;
pub mod node;
pub mod service;
pub mod smd;
pub mod store;
pub mod tags;

pub use boot_service::BootServiceClient;
pub use bss::{BootParams, BssClient};
pub use config::BootConfig;
pub use deploy::{Canaries, Deployer, ImageSource, NodeStatus, Plan, PublishRequest};
pub use error::{BootError, Result, Service};
pub use history::{Action, BootEntry, Deployment, NodeChange, NodeHistoryEntry, NodeOutcome};
pub use http::{BearerToken, ServiceConfig};
pub use image::{BootFile, BootFiles, BootRecord, ImagePackage, ImageRef, LocalBootImage};
pub use node::{MacAddress, NodeError, NodeSelection, NodeSelector, Xname};
pub use service::BootService;
pub use smd::SmdClient;
pub use store::BootStore;
pub use tags::{ReleaseTag, TagRecord};
