//! kiln's osbuild-compatible executor: manifest model and validation, the
//! object store, sources, the build namespace, the bubblewrap sandbox and
//! the stages. The
//! `kiln-osbuild` binary (main.rs) is the command line around it.

pub mod build;
pub mod cli;
pub mod manifest;
pub mod monitor;
pub mod sandbox;
pub mod seccomp;
pub mod secrets;
pub mod sources;
pub mod stages;
pub mod store;
pub mod userns;
