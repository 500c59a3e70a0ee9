//! The stages kiln-osbuild runs. Each stage has typed options (unknown keys
//! refused, so a manifest error names its path before anything runs) and a
//! `run` that executes inside the sandbox, on `/run/osbuild/tree`.
//!
//! Names under `org.osbuild.` take osbuild's options (the subset kiln's
//! manifests use; a test compares them with osbuild's schemas); `kiln.*`
//! stages are kiln's own and carry a `.meta.json` in `manifests/stages/`.

mod accounts;
mod archive;
mod disk;
mod dpkg;
mod files;
mod grub;
pub(crate) mod identity;
mod oci;
mod rpm;
mod system;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sandbox::{API, MOUNTS, TREE};

/// An error at a path below `options`.
pub type OptionError = (Vec<Value>, String);

pub struct StageDef {
    pub name: &'static str,
    pub check: fn(&Value) -> Vec<OptionError>,
    pub run: fn(&Ctx) -> Result<Value, String>,
}

/// Options are checked by deserializing them into the stage's type; the
/// first error is reported with its path.
pub fn check_as<T: DeserializeOwned>(v: &Value) -> Vec<OptionError> {
    match serde_path_to_error::deserialize::<_, T>(v.clone()) {
        Ok(_) => Vec::new(),
        Err(e) => {
            let path = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(json!(index)),
                    serde_path_to_error::Segment::Map { key } => Some(json!(key)),
                    serde_path_to_error::Segment::Enum { variant } => Some(json!(variant)),
                    serde_path_to_error::Segment::Unknown => None,
                })
                .collect();
            vec![(path, e.into_inner().to_string())]
        }
    }
}

macro_rules! stage {
    ($name:literal, $opts:ty, $run:path) => {
        StageDef {
            name: $name,
            check: check_as::<$opts>,
            run: $run,
        }
    };
}

static STAGES: &[StageDef] = &[
    stage!("org.osbuild.mkdir", files::MkdirOptions, files::mkdir),
    stage!("org.osbuild.copy", files::CopyOptions, files::copy),
    stage!("org.osbuild.chmod", files::ChmodOptions, files::chmod),
    stage!("org.osbuild.chown", files::ChownOptions, files::chown),
    stage!(
        "org.osbuild.hostname",
        files::HostnameOptions,
        files::hostname
    ),
    stage!(
        "org.osbuild.timezone",
        files::TimezoneOptions,
        files::timezone
    ),
    stage!("org.osbuild.locale", files::LocaleOptions, files::locale),
    stage!("org.osbuild.fstab", files::FstabOptions, files::fstab),
    stage!(
        "org.osbuild.kernel-cmdline",
        files::KernelCmdlineOptions,
        files::kernel_cmdline
    ),
    stage!("org.osbuild.users", accounts::UsersOptions, accounts::users),
    stage!(
        "org.osbuild.groups",
        accounts::GroupsOptions,
        accounts::groups
    ),
    stage!(
        "org.osbuild.systemd",
        system::SystemdOptions,
        system::systemd
    ),
    stage!("org.osbuild.dracut", system::DracutOptions, system::dracut),
    stage!("org.osbuild.tar", archive::TarOptions, archive::tar),
    stage!(
        "org.osbuild.squashfs",
        archive::SquashfsOptions,
        archive::squashfs
    ),
    stage!(
        "org.osbuild.truncate",
        disk::TruncateOptions,
        disk::truncate
    ),
    stage!(
        "org.osbuild.mkfs.ext4",
        disk::MkfsExt4Options,
        disk::mkfs_ext4
    ),
    stage!("org.osbuild.sfdisk", disk::SfdiskOptions, disk::sfdisk),
    stage!("org.osbuild.mkfs.fat", disk::MkfsFatOptions, disk::mkfs_fat),
    stage!(
        "org.osbuild.grub2.inst",
        grub::Grub2InstOptions,
        grub::grub2_inst
    ),
    stage!("org.osbuild.qemu", disk::QemuOptions, disk::qemu),
    stage!(
        "org.osbuild.oci-archive",
        oci::OciArchiveOptions,
        oci::oci_archive
    ),
    stage!("org.osbuild.rpm", rpm::RpmOptions, rpm::rpm),
    stage!(
        "org.osbuild.systemd.unit.create",
        identity::UnitCreateOptions,
        identity::unit_create
    ),
    stage!("kiln.dpkg", dpkg::DpkgOptions, dpkg::dpkg),
    stage!(
        "kiln.identity.clean",
        identity::CleanOptions,
        identity::clean
    ),
];

pub fn lookup(name: &str) -> Option<&'static StageDef> {
    STAGES.iter().find(|s| s.name == name)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    STAGES.iter().map(|s| s.name)
}

/// What the executor hands a stage (as `args.json` in the sandbox).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageArgs {
    #[serde(rename = "type")]
    pub kind: String,
    pub options: Value,
    pub inputs: BTreeMap<String, InputArgs>,
    pub devices: BTreeMap<String, String>,
    pub mounts: Vec<MountArgs>,
    pub source_epoch: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputArgs {
    /// The input's directory inside the sandbox.
    pub path: String,
    /// The referenced files (checksums for source files, relative paths
    /// for files of a pipeline), in reference order.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountArgs {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub device: Option<String>,
    pub target: String,
    pub options: Value,
}

/// The running stage's view: its options, where things are, and helpers.
pub struct Ctx {
    pub args: StageArgs,
    pub mounts: BTreeMap<String, PathBuf>,
    chroot_mounts: std::cell::RefCell<Vec<PathBuf>>,
}

impl Ctx {
    pub fn options<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.args.options.clone()).map_err(|e| format!("options: {e}"))
    }

    pub fn tree(&self) -> &Path {
        Path::new(TREE)
    }

    /// A path inside the tree: `/etc/hostname` → `/run/osbuild/tree/etc/hostname`.
    pub fn in_tree(&self, path: &str) -> PathBuf {
        self.tree().join(path.trim_start_matches('/'))
    }

    pub fn input(&self, name: &str) -> Result<&InputArgs, String> {
        self.args
            .inputs
            .get(name)
            .ok_or_else(|| format!("the stage needs an input named {name:?}"))
    }

    /// Resolves osbuild's `input://NAME/PATH`, `tree:///PATH` and
    /// `mount://NAME/PATH` URLs.
    pub fn resolve(&self, url: &str) -> Result<PathBuf, String> {
        if let Some(rest) = url.strip_prefix("tree://") {
            return Ok(self.in_tree(rest));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a tree://, input:// or mount:// URL"))?;
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = match scheme {
            "input" => PathBuf::from(&self.input(name)?.path),
            "mount" => self
                .mounts
                .get(name)
                .cloned()
                .ok_or_else(|| format!("{url:?}: no mount named {name:?}"))?,
            other => return Err(format!("{url:?}: unknown scheme {other:?}")),
        };
        if path.split('/').any(|c| c == "..") {
            return Err(format!("{url:?}: '..' is not allowed"));
        }
        Ok(if path.is_empty() {
            base
        } else {
            base.join(path)
        })
    }

    /// Runs a command of the build root; its output is the stage's log.
    pub fn run(&self, cmd: &mut Command) -> Result<(), String> {
        let shown = format!("{cmd:?}");
        let status = cmd.status().map_err(|e| format!("{shown}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{shown} failed: {status}"))
        }
    }

    /// Runs a command of the build root and returns its standard output.
    pub fn output(&self, cmd: &mut Command) -> Result<String, String> {
        output(cmd)
    }

    /// A command run inside the tree (chroot), with /proc and /dev there.
    pub fn chroot(&self, program: &str) -> Result<Command, String> {
        self.mount_api_filesystems()?;
        let mut c = Command::new("chroot");
        c.arg(TREE).arg(program);
        Ok(c)
    }

    /// Mounts /proc, /dev and /sys (read-only) in the tree, once, for what
    /// runs there; they are gone before the tree is committed.
    pub fn mount_api_filesystems(&self) -> Result<(), String> {
        if self.chroot_mounts.borrow().is_empty() {
            let tree = self.tree();
            for (what, dir) in [("proc", "proc"), ("dev", "dev"), ("sys", "sys")] {
                let target = tree.join(dir);
                std::fs::create_dir_all(&target)
                    .map_err(|e| format!("{}: {e}", target.display()))?;
                let result = match what {
                    "proc" => rustix::mount::mount(
                        "proc",
                        &target,
                        "proc",
                        rustix::mount::MountFlags::empty(),
                        None,
                    ),
                    "dev" => rustix::mount::mount_bind_recursive("/dev", &target),
                    _ => rustix::mount::mount_bind_recursive("/sys", &target).and_then(|_| {
                        rustix::mount::mount_remount(
                            &target,
                            rustix::mount::MountFlags::BIND | rustix::mount::MountFlags::RDONLY,
                            "",
                        )
                    }),
                };
                result.map_err(|e| format!("mount {what} on {}: {e}", target.display()))?;
                self.chroot_mounts.borrow_mut().push(target);
            }
        }
        Ok(())
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Leave no mount point busy in the tree the executor commits.
        for m in self.chroot_mounts.borrow().iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
        let mut mounted: Vec<&PathBuf> = self.mounts.values().collect();
        mounted.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for m in mounted {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::empty());
        }
    }
}

fn mount_fs(m: &MountArgs) -> Result<PathBuf, String> {
    let target = Path::new(MOUNTS).join(m.target.trim_start_matches('/'));
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let device = m
        .device
        .as_deref()
        .ok_or_else(|| format!("mount {:?} has no source device", m.name))?;
    let fstype = match m.kind.as_str() {
        "org.osbuild.ext4" => "ext4",
        "org.osbuild.fat" => "vfat",
        "org.osbuild.xfs" => "xfs",
        other => return Err(format!("unknown mount type {other:?}")),
    };
    rustix::mount::mount(
        device,
        &target,
        fstype,
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| format!("mount {device} ({fstype}) on {}: {e}", target.display()))?;
    Ok(target)
}

/// The stage side of the sandbox: `kiln-osbuild __stage ARGS.json`.
pub fn stage_main(args_path: &str) -> i32 {
    let result = (|| -> Result<Value, String> {
        let text = std::fs::read(args_path).map_err(|e| format!("{args_path}: {e}"))?;
        let args: StageArgs =
            serde_json::from_slice(&text).map_err(|e| format!("{args_path}: {e}"))?;
        let def = lookup(&args.kind).ok_or_else(|| format!("unknown stage {:?}", args.kind))?;
        let mut ctx = Ctx {
            args,
            mounts: BTreeMap::new(),
            chroot_mounts: std::cell::RefCell::new(Vec::new()),
        };
        // Shallow targets first, so that `/boot` mounts inside `/`.
        let mut order = ctx.args.mounts.clone();
        order.sort_by_key(|m| m.target.len());
        for m in &order {
            let path = mount_fs(m)?;
            ctx.mounts.insert(m.name.clone(), path);
        }
        let out = (def.run)(&ctx);
        drop(ctx);
        out
    })();
    match result {
        Ok(metadata) => {
            let path = Path::new(API).join("metadata.json");
            if let Err(e) = std::fs::write(&path, metadata.to_string()) {
                eprintln!("{}: {e}", path.display());
                return 1;
            }
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            let _ = std::fs::write(Path::new(API).join("error.txt"), &e);
            1
        }
    }
}

/// Runs a command (its errors go to the stage's log) and returns its
/// standard output.
pub(crate) fn output(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed: {}", out.status));
    }
    String::from_utf8(out.stdout).map_err(|e| format!("{shown}: {e}"))
}
