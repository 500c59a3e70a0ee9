//! The stages kiln-osbuild runs. Each stage is a type implementing
//! [`Stage`]: its name, its typed options (unknown keys refused, so a
//! manifest error names its path before anything runs) and a `run` that
//! executes inside the sandbox, on `/run/osbuild/tree`, given those options.
//! The registry lists the stage types; an entry's validation check and its
//! run-time deserialisation both come from the stage's one `Options` type.
//!
//! Names under `org.osbuild.` take osbuild's options (the subset kiln's
//! manifests use; a test compares them with osbuild's schemas); `kiln.*`
//! stages are kiln's own and carry a `.meta.json` in `manifests/stages/`.

mod accounts;
mod archive;
mod copyright;
mod disk;
mod dpkg;
mod files;
mod grub;
pub(crate) mod identity;
mod nodes;
mod oci;
mod reproducible;
mod rpm;
mod system;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::sandbox::{API, TREE};

/// An error at a path below `options`.
pub type OptionError = (Vec<Value>, String);

/// A stage: the name manifests call it by, the type its options
/// deserialise into, and what it does with them.
///
/// The options a manifest is validated against and the options `run`
/// receives are one type, `Self::Options`: the registry entry
/// ([`StageDef::of`]) makes both the validation-time check and the run-time
/// deserialisation from it, and `run` is handed the value already
/// deserialised. So a stage cannot be checked as one type and read as
/// another; a mismatch is a type error, found by the compiler, instead of
/// a manifest that validates and then fails (or means something else)
/// inside the sandbox.
pub trait Stage {
    /// The stage's `type` in a manifest.
    const NAME: &'static str;
    /// The stage's options, with unknown keys refused
    /// (`deny_unknown_fields`), so a bad option names its path before
    /// anything runs.
    type Options: DeserializeOwned;
    /// Runs inside the sandbox, on `/run/osbuild/tree`; the value returned
    /// is the stage's metadata.
    fn run(ctx: &Ctx, options: Self::Options) -> Result<Value, String>;
}

/// A registry entry: a stage's name, its options check and its run, all
/// made from one [`Stage`] by [`StageDef::of`] (the fields are private, so
/// there is no other way to make one).
pub struct StageDef {
    name: &'static str,
    check: fn(&Value) -> Vec<OptionError>,
    run: fn(&Ctx) -> Result<Value, String>,
}

impl StageDef {
    pub const fn of<S: Stage>() -> StageDef {
        StageDef {
            name: S::NAME,
            check: check_as::<S::Options>,
            run: run_as::<S>,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Checks a manifest's options for this stage: the errors, each with
    /// its path below `options`.
    pub fn check(&self, options: &Value) -> Vec<OptionError> {
        (self.check)(options)
    }
}

/// Options are checked by deserializing them into the stage's type; the
/// first error is reported with its path.
fn check_as<T: DeserializeOwned>(v: &Value) -> Vec<OptionError> {
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

/// The run side of an entry: the stage's options, deserialised into the
/// same type [`check_as`] checked, handed to its `run`.
fn run_as<S: Stage>(ctx: &Ctx) -> Result<Value, String> {
    let options =
        serde_json::from_value(ctx.args.options.clone()).map_err(|e| format!("options: {e}"))?;
    S::run(ctx, options)
}

static STAGES: &[StageDef] = &[
    StageDef::of::<files::Mkdir>(),
    StageDef::of::<files::CopyFiles>(),
    StageDef::of::<files::Chmod>(),
    StageDef::of::<files::Chown>(),
    StageDef::of::<files::Hostname>(),
    StageDef::of::<files::Timezone>(),
    StageDef::of::<files::Locale>(),
    StageDef::of::<files::Fstab>(),
    StageDef::of::<files::KernelCmdline>(),
    StageDef::of::<accounts::Users>(),
    StageDef::of::<accounts::Groups>(),
    StageDef::of::<system::Systemd>(),
    StageDef::of::<system::Dracut>(),
    StageDef::of::<system::DracutBuildRoot>(),
    StageDef::of::<archive::Tar>(),
    StageDef::of::<archive::Squashfs>(),
    StageDef::of::<archive::Xz>(),
    StageDef::of::<disk::Truncate>(),
    StageDef::of::<disk::MkfsExt4>(),
    StageDef::of::<disk::MkfsExt4Tree>(),
    StageDef::of::<disk::Sfdisk>(),
    StageDef::of::<disk::MkfsFat>(),
    StageDef::of::<grub::Grub2Inst>(),
    StageDef::of::<disk::Qemu>(),
    StageDef::of::<oci::OciArchive>(),
    StageDef::of::<rpm::Rpm>(),
    StageDef::of::<identity::UnitCreate>(),
    StageDef::of::<dpkg::Dpkg>(),
    StageDef::of::<identity::Clean>(),
    StageDef::of::<reproducible::Reproducible>(),
    StageDef::of::<nodes::Devices>(),
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
    pub devices: BTreeMap<String, DeviceArgs>,
    pub source_epoch: Option<u64>,
    /// Whether `/` is a build pipeline's tree (not the host's).
    #[serde(default)]
    pub build_root: bool,
}

/// An `org.osbuild.loopback` device without a loop device: a byte range of
/// a file in the tree, which the stage's tools write at its offset (a
/// kernel loop device needs privileges on the host, which no stage has).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceArgs {
    /// The image file, inside the sandbox.
    pub file: String,
    /// Where the device starts, in bytes.
    pub offset: u64,
    /// Its length in bytes; 0: to the end of the file.
    pub size: u64,
}

impl DeviceArgs {
    /// The device's length in bytes, now.
    pub fn bytes(&self) -> Result<u64, String> {
        if self.size > 0 {
            return Ok(self.size);
        }
        let total = fs::metadata(&self.file)
            .map_err(|e| format!("{}: {e}", self.file))?
            .len();
        total.checked_sub(self.offset).ok_or_else(|| {
            format!(
                "{}: the device starts at byte {}, after the file's end ({total})",
                self.file, self.offset
            )
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputArgs {
    /// The input's directory inside the sandbox.
    pub path: String,
    /// The referenced files (checksums for source files, relative paths
    /// for files of a pipeline), in reference order.
    pub files: Vec<String>,
}

/// The running stage's view: its arguments, where things are, and helpers
/// (its options come to `run` already deserialised).
pub struct Ctx {
    pub args: StageArgs,
    chroot_mounts: std::cell::RefCell<Vec<PathBuf>>,
}

impl Ctx {
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

    /// Resolves osbuild's `input://NAME/PATH` and `tree:///PATH` URLs.
    pub fn resolve(&self, url: &str) -> Result<PathBuf, String> {
        if let Some(rest) = url.strip_prefix("tree://") {
            return Ok(self.in_tree(rest));
        }
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a tree:// or input:// URL"))?;
        let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
        let base = match scheme {
            "input" => PathBuf::from(&self.input(name)?.path),
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

    /// A program of the tree run inside it (chroot), with /proc and /dev
    /// there, and without the capabilities no package script needs
    /// ([`SCRIPT_CAPABILITIES`]): not even `chroot`, so the tree's root is
    /// its root.
    pub fn chroot(&self, program: &str) -> Result<Command, String> {
        self.mount_api_filesystems()?;
        let found = ["usr/bin", "usr/sbin", "bin", "sbin"]
            .iter()
            .map(|d| format!("/{d}/{program}"))
            .find(|p| self.in_tree(p).is_file())
            .ok_or_else(|| {
                format!("the tree has no {program} in /usr/bin, /usr/sbin, /bin or /sbin")
            })?;
        let mut c = Command::new(found);
        let last = last_capability();
        // SAFETY: between fork and exec only chroot, chdir and prctl, which
        // are async-signal-safe system calls.
        unsafe {
            c.pre_exec(move || {
                rustix::process::chroot(TREE)?;
                rustix::process::chdir("/")?;
                drop_capabilities(last, false)
            });
        }
        Ok(c)
    }

    /// A program of the build root (the pipeline's `build` tree, at `/`),
    /// with the capabilities package scripts keep and no others: the
    /// build root's own scripts (dracut's modules) run in it.
    pub fn build_root_tool(&self, program: &str) -> Result<Command, String> {
        if !self.args.build_root {
            return Err(format!(
                "{program} is the build root's: this stage's pipeline needs a build pipeline (\"build\": \"name:PIPELINE\")"
            ));
        }
        let mut c = Command::new(program);
        let last = last_capability();
        // SAFETY: only prctl and capset between fork and exec.
        unsafe {
            c.pre_exec(move || drop_capabilities(last, false));
        }
        Ok(c)
    }

    /// A tool that runs package scripts itself (`rpm --root`, which
    /// chroots into the tree for them): [`SCRIPT_CAPABILITIES`] and
    /// `CAP_SYS_CHROOT`, nothing else.
    pub fn package_tool(&self, cmd: &mut Command) {
        let last = last_capability();
        // SAFETY: only prctl between fork and exec.
        unsafe {
            cmd.pre_exec(move || drop_capabilities(last, true));
        }
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
                    _ => rustix::mount::mount_bind_recursive("/sys", &target)
                        .and_then(|_| remount_read_only(&target)),
                };
                result.map_err(|e| format!("mount {what} on {}: {e}", target.display()))?;
                self.chroot_mounts.borrow_mut().push(target);
            }
        }
        Ok(())
    }
}

/// A scratch file (in the sandbox's /tmp) holding `contents`, for a tool
/// that reads a list or script from a file; it is removed when the handle
/// is dropped. `what` names it in errors.
pub(super) fn scratch_file(what: &str, contents: &[u8]) -> Result<tempfile::NamedTempFile, String> {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().map_err(|e| format!("{what}: {e}"))?;
    f.write_all(contents)
        .and_then(|()| f.flush())
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(f)
}

/// What package scripts keep of the sandbox's capabilities: owners and
/// modes of the tree's files (chown, setuid bits, file capabilities with
/// setcap), switching users (`su`, apt's `_apt`), signals. Not
/// `CAP_SYS_ADMIN` (mounts), modules, raw I/O, ptrace, the network's
/// configuration, the clock or reboot: a script that tries gets `EPERM`,
/// also in a new user namespace, which the seccomp filter refuses.
pub const SCRIPT_CAPABILITIES: &[(u32, &str)] = &[
    (0, "CAP_CHOWN"),
    (1, "CAP_DAC_OVERRIDE"),
    (2, "CAP_DAC_READ_SEARCH"),
    (3, "CAP_FOWNER"),
    (4, "CAP_FSETID"),
    (5, "CAP_KILL"),
    (6, "CAP_SETGID"),
    (7, "CAP_SETUID"),
    (8, "CAP_SETPCAP"),
    (10, "CAP_NET_BIND_SERVICE"),
    (27, "CAP_MKNOD"),
    (29, "CAP_AUDIT_WRITE"),
    (31, "CAP_SETFCAP"),
];
const CAP_SYS_CHROOT: u32 = 18;

fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// `struct __user_cap_header_struct` and `__user_cap_data_struct` (version 3:
/// two of the latter, for capabilities 0-31 and 32-63).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability but [`SCRIPT_CAPABILITIES`] (and
/// `CAP_SYS_CHROOT` if asked) from what the next exec gives root: the
/// bounding set, the inheritable set (bubblewrap's `--cap-add` fills it)
/// and the ambient set. Async-signal-safe (for `pre_exec`).
fn drop_capabilities(last: u32, keep_chroot: bool) -> std::io::Result<()> {
    let keep = |cap: u32| {
        SCRIPT_CAPABILITIES.iter().any(|(c, _)| *c == cap) || (keep_chroot && cap == CAP_SYS_CHROOT)
    };
    let fail = || Err(std::io::Error::last_os_error());
    for cap in (0..=last).filter(|c| !keep(*c)) {
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            return fail();
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    } != 0
    {
        return fail();
    }
    let mut header = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget and capset with a version 3 header and two data structs.
    unsafe {
        if libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        ) != 0
        {
            return fail();
        }
        for cap in (0..=last.min(63)).filter(|c| !keep(*c)) {
            data[(cap / 32) as usize].inheritable &= !(1u32 << (cap % 32));
        }
        if libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        ) != 0
        {
            return fail();
        }
    }
    Ok(())
}

/// Makes a bind mount read-only. In a user namespace a remount must repeat
/// the flags the mount was locked with when the namespace was made
/// (nosuid, nodev, noexec), or the kernel refuses it; they are read back
/// from the mount itself.
pub(crate) fn remount_read_only(target: &Path) -> rustix::io::Result<()> {
    use rustix::fs::StatVfsMountFlags as F;
    use rustix::mount::MountFlags as M;
    let have = rustix::fs::statvfs(target)?.f_flag;
    let mut flags = M::BIND | M::RDONLY;
    for (has, keep) in [
        (F::NOSUID, M::NOSUID),
        (F::NODEV, M::NODEV),
        (F::NOEXEC, M::NOEXEC),
    ] {
        if have.contains(has) {
            flags |= keep;
        }
    }
    rustix::mount::mount_remount(target, flags, "")
}

impl Drop for Ctx {
    fn drop(&mut self) {
        // Leave no mount point busy in the tree the executor commits.
        for m in self.chroot_mounts.borrow().iter().rev() {
            let _ = rustix::mount::unmount(m, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

/// The stage side of the sandbox: `kiln-osbuild __stage ARGS.json`.
pub fn stage_main(args_path: &str) -> i32 {
    let result = (|| -> Result<Value, String> {
        let text = std::fs::read(args_path).map_err(|e| format!("{args_path}: {e}"))?;
        let args: StageArgs =
            serde_json::from_slice(&text).map_err(|e| format!("{args_path}: {e}"))?;
        let def = lookup(&args.kind).ok_or_else(|| format!("unknown stage {:?}", args.kind))?;
        let ctx = Ctx {
            args,
            chroot_mounts: std::cell::RefCell::new(Vec::new()),
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_registered_once_under_its_name() {
        let mut seen = std::collections::BTreeSet::new();
        for name in names() {
            assert!(seen.insert(name), "{name} is registered twice");
            assert_eq!(lookup(name).map(StageDef::name), Some(name));
        }
    }
}
