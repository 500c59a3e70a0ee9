//! What makes an image one machine rather than a template: host keys,
//! machine ids, random seeds. `kiln.identity.clean` removes them at the
//! end of a build (every node that boots the image must make its own), and
//! `org.osbuild.systemd.unit.create` writes the unit that makes them on the
//! node at boot.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Ctx, Stage};

/// Options of `kiln.identity.clean` (schema: `manifests/stages/kiln.identity.clean.meta.json`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CleanOptions {
    /// Removed when present (files and symbolic links, never directories).
    #[serde(default)]
    pub remove: Vec<String>,
    /// Truncated to zero bytes when present (`/etc/machine-id`: systemd
    /// then makes a new id on each node's first boot).
    #[serde(default)]
    pub empty: Vec<String>,
    /// Private key material deliberately baked into the image: the
    /// executor's export check accepts these paths of this pipeline's tree.
    #[serde(default, rename = "keep-private-keys")]
    pub keep_private_keys: Vec<String>,
}

/// An absolute path of the tree, as the components below the root; `..`,
/// `.` and empty names are refused so the path means what it says.
fn tree_path(path: &str) -> Result<Vec<&str>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("{path:?} is not an absolute path"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(format!(
            "{path:?}: empty, '.' and '..' components are not allowed"
        ));
    }
    Ok(parts)
}

/// The directory holding `path`, opened with every link resolved inside
/// the tree (a package's symbolic link cannot point the stage outside it),
/// and the file's name in it. `None` when the directory does not exist.
fn open_parent<'p>(tree: &OwnedFd, path: &'p str) -> Result<Option<(OwnedFd, &'p str)>, String> {
    let parts = tree_path(path)?;
    let (name, dirs) = parts
        .split_last()
        .ok_or_else(|| format!("{path:?} names the root"))?;
    let dir = if dirs.is_empty() {
        ".".to_owned()
    } else {
        dirs.join("/")
    };
    match rustix::fs::openat2(
        tree,
        dir.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => Ok(Some((fd, name))),
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(format!("{path}: opening its directory: {e}")),
    }
}

/// The tree opened as a directory, for [`open_parent`].
pub(crate) fn open_tree(ctx: &Ctx) -> Result<OwnedFd, String> {
    rustix::fs::open(
        ctx.tree(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{}: {e}", ctx.tree().display()))
}

/// Removes each file or link of `paths` that is present (never a
/// directory), its directory resolved inside the tree; returns those removed.
pub(crate) fn remove_files(tree: &OwnedFd, paths: &[String]) -> Result<Vec<String>, String> {
    let mut removed = Vec::new();
    for path in paths {
        let Some((dir, name)) = open_parent(tree, path)? else {
            continue;
        };
        match rustix::fs::unlinkat(&dir, name, AtFlags::empty()) {
            Ok(()) => {
                eprintln!("removed {path}");
                removed.push(path.clone());
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(format!("removing {path}: {e}")),
        }
    }
    Ok(removed)
}

pub(crate) struct Clean;

impl Stage for Clean {
    const NAME: &'static str = "kiln.identity.clean";
    type Options = CleanOptions;

    fn run(ctx: &Ctx, o: CleanOptions) -> Result<Value, String> {
        for p in &o.keep_private_keys {
            tree_path(p)?;
        }
        let tree = open_tree(ctx)?;
        let removed = remove_files(&tree, &o.remove)?;
        let mut emptied = Vec::new();
        for path in &o.empty {
            let Some((dir, name)) = open_parent(&tree, path)? else {
                continue;
            };
            // O_NOFOLLOW: a link planted at this name is not a way out of the tree.
            match rustix::fs::openat(
                &dir,
                name,
                OFlags::WRONLY | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(_) => {
                    eprintln!("emptied {path}");
                    emptied.push(path.clone());
                }
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(format!("emptying {path}: {e}")),
            }
        }
        Ok(json!({"removed": removed, "emptied": emptied}))
    }
}

/// Options of osbuild's `org.osbuild.systemd.unit.create` (the sections
/// and keys its schema allows; anything else is refused).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnitCreateOptions {
    filename: String,
    #[serde(rename = "unit-type", default)]
    unit_type: UnitType,
    #[serde(rename = "unit-path", default)]
    unit_path: UnitPath,
    config: UnitConfig,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum UnitType {
    #[default]
    System,
    Global,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum UnitPath {
    #[default]
    Usr,
    Etc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitConfig {
    #[serde(rename = "Unit", default)]
    unit: Option<UnitSection>,
    #[serde(rename = "Service", default)]
    service: Option<ServiceSection>,
    #[serde(rename = "Mount", default)]
    mount: Option<MountSection>,
    #[serde(rename = "Socket", default)]
    socket: Option<SocketSection>,
    #[serde(rename = "Swap", default)]
    swap: Option<SwapSection>,
    #[serde(rename = "Install", default)]
    install: Option<InstallSection>,
}

type Strings = Option<Vec<String>>;

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct UnitSection {
    description: Option<String>,
    wants: Strings,
    after: Strings,
    before: Strings,
    requires: Strings,
    condition_path_exists: Strings,
    condition_path_is_directory: Strings,
    default_dependencies: Option<bool>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct ServiceSection {
    #[serde(rename = "Type")]
    kind: Option<ServiceType>,
    remain_after_exit: Option<bool>,
    exec_start_pre: Strings,
    exec_stop_post: Strings,
    exec_start: Strings,
    environment: Option<Vec<EnvironmentEntry>>,
    environment_file: Strings,
    standard_output: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
enum ServiceType {
    Simple,
    Exec,
    Forking,
    Oneshot,
    Dbus,
    Notify,
    NotifyReload,
    Idle,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentEntry {
    key: String,
    value: String,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct MountSection {
    what: String,
    #[serde(rename = "Where")]
    at: String,
    #[serde(rename = "Type")]
    kind: Option<String>,
    options: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct SocketSection {
    listen_stream: Option<String>,
    listen_datagram: Option<String>,
    listen_sequential_packet: Option<String>,
    #[serde(rename = "ListenFIFO")]
    listen_fifo: Option<String>,
    socket_user: Option<String>,
    socket_group: Option<String>,
    socket_mode: Option<String>,
    directory_mode: Option<String>,
    accept: Option<bool>,
    service: Option<String>,
    runtime_directory: Option<String>,
    remove_on_stop: Option<bool>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct SwapSection {
    what: String,
    priority: Option<i64>,
    options: Option<String>,
    timeout_sec: Option<String>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "PascalCase")]
struct InstallSection {
    wanted_by: Strings,
    required_by: Strings,
}

/// One `Key=value` line per value: lists repeat their key (systemd adds
/// them up), booleans are `yes`/`no`, environment entries `"K=V"`.
fn render_section(out: &mut String, name: &str, section: &impl Serialize) -> Result<(), String> {
    let Value::Object(fields) = serde_json::to_value(section).map_err(|e| e.to_string())? else {
        return Err(format!("section {name} is not a table"));
    };
    out.push_str(&format!("[{name}]\n"));
    for (key, value) in fields {
        let values = match value {
            Value::Null => continue,
            Value::Array(items) => items,
            one => vec![one],
        };
        for v in values {
            let text = match v {
                Value::Bool(b) => (if b { "yes" } else { "no" }).to_owned(),
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Object(kv) => {
                    let entry: EnvironmentEntry =
                        serde_json::from_value(Value::Object(kv)).map_err(|e| e.to_string())?;
                    format!("\"{}={}\"", entry.key, entry.value)
                }
                other => return Err(format!("{name}.{key}: unexpected value {other}")),
            };
            if text.contains('\n') {
                return Err(format!("{name}.{key}: a value cannot span lines"));
            }
            out.push_str(&format!("{key}={text}\n"));
        }
    }
    out.push('\n');
    Ok(())
}

pub(crate) struct UnitCreate;

impl Stage for UnitCreate {
    const NAME: &'static str = "org.osbuild.systemd.unit.create";
    type Options = UnitCreateOptions;

    fn run(ctx: &Ctx, o: UnitCreateOptions) -> Result<Value, String> {
        let c = &o.config;
        // The schema's rules: a name systemd accepts, and one kind of unit,
        // the one its suffix names.
        let (stem, suffix) = o
            .filename
            .rsplit_once('.')
            .ok_or_else(|| format!("{:?} has no unit suffix", o.filename))?;
        let valid_char = |ch: char| ch.is_alphanumeric() || "_:.\\-@".contains(ch);
        if stem.is_empty() || !stem.chars().all(valid_char) || stem.matches('@').count() > 1 {
            return Err(format!("{:?} is not a unit file name", o.filename));
        }
        let kinds = [
            ("service", c.service.is_some()),
            ("mount", c.mount.is_some()),
            ("socket", c.socket.is_some()),
            ("swap", c.swap.is_some()),
        ];
        let present: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
        if present != [suffix] {
            return Err(format!(
                "{:?} needs exactly a {suffix:?} section, the config has {present:?}",
                o.filename
            ));
        }
        if suffix == "service" && (c.unit.is_none() || c.install.is_none()) {
            return Err("a service needs Unit, Service and Install sections".into());
        }
        let mut text = String::new();
        if let Some(s) = &c.unit {
            render_section(&mut text, "Unit", s)?;
        }
        if let Some(s) = &c.service {
            render_section(&mut text, "Service", s)?;
        }
        if let Some(s) = &c.mount {
            render_section(&mut text, "Mount", s)?;
        }
        if let Some(s) = &c.socket {
            render_section(&mut text, "Socket", s)?;
        }
        if let Some(s) = &c.swap {
            render_section(&mut text, "Swap", s)?;
        }
        if let Some(s) = &c.install {
            render_section(&mut text, "Install", s)?;
        }
        let dir = match (o.unit_type, o.unit_path) {
            (UnitType::System, UnitPath::Usr) => "/usr/lib/systemd/system",
            (UnitType::System, UnitPath::Etc) => "/etc/systemd/system",
            (UnitType::Global, UnitPath::Usr) => "/usr/lib/systemd/user",
            (UnitType::Global, UnitPath::Etc) => "/etc/systemd/user",
        };
        let dir = ctx.in_tree(dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(&o.filename);
        let mut f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.write_all(text.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert_eq!(tree_path("/etc/machine-id").unwrap(), ["etc", "machine-id"]);
        for bad in ["etc/x", "/etc/../x", "/etc//x", "/./x", "/"] {
            assert!(tree_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_link_in_the_tree_cannot_lead_the_stage_outside_it() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "host file").unwrap();
        let tree_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(tree_dir.path().join("etc")).unwrap();
        // A package's absolute link, and one climbing out with `..`.
        std::os::unix::fs::symlink(outside.path(), tree_dir.path().join("etc/abs")).unwrap();
        let up = "../".repeat(16) + outside.path().to_str().unwrap().trim_start_matches('/');
        std::os::unix::fs::symlink(&up, tree_dir.path().join("etc/up")).unwrap();
        let tree = rustix::fs::open(
            tree_dir.path(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        for hostile in ["/etc/abs/victim", "/etc/up/victim"] {
            // Resolved inside the tree, where no such directory exists.
            assert!(open_parent(&tree, hostile).unwrap().is_none(), "{hostile}");
        }
        assert!(outside.path().join("victim").exists());
    }

    #[test]
    fn a_service_renders_as_systemd_reads_it() {
        let config: UnitConfig = serde_json::from_value(json!({
            "Unit": {"Description": "d", "Before": ["a.service", "b.service"], "DefaultDependencies": false},
            "Service": {"Type": "oneshot", "RemainAfterExit": true, "ExecStart": ["/x -A"],
                        "Environment": [{"key": "K", "value": "v w"}]},
            "Install": {"WantedBy": ["multi-user.target"]},
        }))
        .unwrap();
        let mut text = String::new();
        render_section(&mut text, "Unit", config.unit.as_ref().unwrap()).unwrap();
        render_section(&mut text, "Service", config.service.as_ref().unwrap()).unwrap();
        assert_eq!(
            text,
            "[Unit]\nBefore=a.service\nBefore=b.service\nDefaultDependencies=no\nDescription=d\n\n\
             [Service]\nEnvironment=\"K=v w\"\nExecStart=/x -A\nRemainAfterExit=yes\nType=oneshot\n\n"
        );
        let bad = serde_json::from_value::<UnitConfig>(json!({"Unit": {"ExecStart": ["/x"]}}));
        assert!(bad.is_err());
    }
}
