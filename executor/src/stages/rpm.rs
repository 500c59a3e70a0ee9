//! `org.osbuild.rpm`: installs the `packages` input's RPM files into the
//! tree in one transaction of the build root's `rpm --root`, with /dev,
//! /proc and /sys in the tree for the scriptlets. Reports the installed
//! packages as metadata.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{Ctx, Stage, TREE};

/// The RPM database inside the tree when the manifest does not say: where
/// the RHEL 9 family's rpm keeps it. The build root's own default may be
/// elsewhere (Debian's rpm uses ~/.rpmdb), so it is always passed.
const DEFAULT_DBPATH: &str = "/var/lib/rpm";

/// kernel-install plugins that would run dracut while the kernel installs.
const DRACUT_PLUGINS: &[&str] = &[
    "/etc/kernel/install.d/50-dracut.install",
    "/etc/kernel/install.d/51-dracut-rescue.install",
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RpmOptions {
    dbpath: Option<String>,
    #[serde(default)]
    gpgkeys: Vec<String>,
    #[serde(rename = "gpgkeys.fromtree", default)]
    gpgkeys_fromtree: Vec<String>,
    #[serde(default)]
    rpmkeys: RpmKeys,
    #[serde(default)]
    disable_dracut: bool,
    #[serde(default)]
    exclude: Exclude,
    #[serde(default, deserialize_with = "langs")]
    install_langs: Option<Vec<String>>,
    #[serde(default)]
    nodeps: bool,
    #[serde(default)]
    ignorearch: bool,
    #[serde(default)]
    generic_env: BTreeMap<String, String>,
    #[serde(default)]
    kernel_install_env: KernelInstallEnv,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RpmKeys {
    bin_path: Option<String>,
    #[serde(default)]
    ignore_import_failures: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Exclude {
    #[serde(default)]
    docs: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct KernelInstallEnv {
    boot_root: Option<String>,
    conf_root: Option<String>,
    plugins: Option<String>,
    machine_id: Option<String>,
}

/// `install_langs`: at least one, no duplicates, and no ':' (the macro's
/// separator).
fn langs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    if v.is_empty() {
        return Err(serde::de::Error::custom("install_langs needs a language"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for l in &v {
        if l.is_empty() || l.contains([':', '\n']) || !seen.insert(l) {
            return Err(serde::de::Error::custom(format!(
                "install_langs: {l:?} is empty, repeated or holds ':'"
            )));
        }
    }
    Ok(Some(v))
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

fn check_tree_path(what: &str, p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p.split('/').any(|c| c == "..") {
        return Err(format!(
            "{what} {p:?} must be an absolute path inside the tree"
        ));
    }
    Ok(())
}

impl RpmOptions {
    fn dbpath(&self) -> &str {
        self.dbpath.as_deref().unwrap_or(DEFAULT_DBPATH)
    }

    /// `rpm`/`rpmkeys` working on the tree's database, with the options'
    /// environment.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(["--root", TREE, "--dbpath", self.dbpath()]);
        c.envs(&self.generic_env);
        let k = &self.kernel_install_env;
        for (name, value) in [
            ("BOOT_ROOT", &k.boot_root),
            ("KERNEL_INSTALL_CONF_ROOT", &k.conf_root),
            ("KERNEL_INSTALL_PLUGINS", &k.plugins),
            ("MACHINE_ID", &k.machine_id),
        ] {
            if let Some(v) = value {
                c.env(name, v);
            }
        }
        c
    }

    fn rpmkeys(&self) -> Command {
        self.command(self.rpmkeys.bin_path.as_deref().unwrap_or("rpmkeys"))
    }
}

fn import_key(ctx: &Ctx, o: &RpmOptions, file: &Path) -> Result<(), String> {
    match ctx.run(o.rpmkeys().arg("--import").arg(file)) {
        Err(e) if o.rpmkeys.ignore_import_failures => {
            println!("ignored: {e}");
            Ok(())
        }
        other => other,
    }
}

/// The installed packages, sorted, without the gpg-pubkey pseudo-packages,
/// each with its source RPM, declared license and, when it came from one of
/// `files` (by its name, architecture and header digest), that file's
/// checksum: what the SBOM needs.
fn installed(
    ctx: &Ctx,
    o: &RpmOptions,
    files: &BTreeMap<(String, String, String), String>,
) -> Result<Vec<Value>, String> {
    let text = ctx.output(o.command("rpm").args([
        "--query",
        "--all",
        "--queryformat",
        "%{NAME}\\t%{EPOCH}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}\\t%{SIGMD5}\\t%{SOURCERPM}\\t%{LICENSE}\\n",
    ]))?;
    let mut rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.splitn(8, '\t').collect::<Vec<&str>>())
        .filter(|f| f.len() == 8 && f[0] != "gpg-pubkey")
        .collect();
    rows.sort();
    Ok(rows
        .iter()
        .map(|f| {
            let mut p = json!({"name": f[0], "version": f[2], "release": f[3], "arch": f[4], "sigmd5": f[5]});
            if f[1] != "(none)" {
                p["epoch"] = json!(f[1]);
            }
            if let Some(source) = source_rpm(f[6]) {
                p["source"] = source;
            }
            if f[7] != "(none)" && !f[7].is_empty() {
                p["license"] = json!(f[7]);
            }
            let key = (f[0].to_owned(), f[4].to_owned(), f[5].to_owned());
            if let Some(checksum) = files.get(&key) {
                p["checksum"] = json!(checksum);
            }
            p
        })
        .collect())
}

/// `bash-5.1.8-6.el9.src.rpm` as a source package: `bash`, `5.1.8-6.el9`.
fn source_rpm(file: &str) -> Option<Value> {
    let stem = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (rest, release) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    Some(json!({"name": name, "version": format!("{version}-{release}")}))
}

/// The package files of the input by (name, architecture, header digest),
/// each to its checksum (the file's name in the input).
fn package_files(
    ctx: &Ctx,
    dir: &Path,
    files: &[String],
) -> Result<BTreeMap<(String, String, String), String>, String> {
    // Read from the files themselves, not through the tree's database.
    let text = ctx.output(
        Command::new("rpm")
            .args([
                "--query",
                "--package",
                "--nosignature",
                "--nodigest",
                "--queryformat",
                "%{NAME}\\t%{ARCH}\\t%{SIGMD5}\\n",
            ])
            .args(files.iter().map(|f| dir.join(f))),
    )?;
    let rows: Vec<&str> = text.lines().collect();
    if rows.len() != files.len() {
        return Err(format!(
            "rpm described {} of the {} package files",
            rows.len(),
            files.len()
        ));
    }
    let mut out = BTreeMap::new();
    for (row, file) in rows.iter().zip(files) {
        if let [name, arch, sigmd5] = row.split('\t').collect::<Vec<_>>().as_slice() {
            out.insert(
                (name.to_string(), arch.to_string(), sigmd5.to_string()),
                file.clone(),
            );
        }
    }
    Ok(out)
}

pub(super) struct Rpm;

impl Stage for Rpm {
    const NAME: &'static str = "org.osbuild.rpm";
    type Options = RpmOptions;

    fn run(ctx: &Ctx, o: RpmOptions) -> Result<Value, String> {
        check_tree_path("dbpath", o.dbpath())?;
        for p in &o.gpgkeys_fromtree {
            check_tree_path("gpgkeys.fromtree", p)?;
        }
        let input = ctx.input("packages")?;
        if input.files.is_empty() {
            return Err("the packages input names no package".into());
        }
        let db = ctx.in_tree(o.dbpath());
        fs::create_dir_all(&db).map_err(|e| io(&db, e))?;
        // Scriptlets run chrooted in the tree and need /dev, /proc and /sys.
        ctx.mount_api_filesystems()?;

        for (i, key) in o.gpgkeys.iter().enumerate() {
            let file = Path::new("/tmp").join(format!("gpgkey-{i}.asc"));
            fs::write(&file, key).map_err(|e| io(&file, e))?;
            import_key(ctx, &o, &file)?;
        }

        let mut masked = Vec::new();
        if o.disable_dracut {
            for plugin in DRACUT_PLUGINS {
                let path = ctx.in_tree(plugin);
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                }
                if !path.exists() {
                    std::os::unix::fs::symlink("/dev/null", &path).map_err(|e| io(&path, e))?;
                    masked.push(path);
                }
            }
        }

        let mut install = o.command("rpm");
        install.args(["--install", "--verbose"]);
        if o.exclude.docs {
            install.arg("--excludedocs");
        }
        if o.nodeps {
            install.arg("--nodeps");
        }
        if o.ignorearch {
            install.arg("--ignorearch");
        }
        if let Some(langs) = &o.install_langs {
            install
                .arg("--define")
                .arg(format!("_install_langs {}", langs.join(":")));
        }
        // The package files are named by checksum; rpm reads what they are.
        let dir = Path::new(&input.path);
        install.args(input.files.iter().map(|f| dir.join(f)));
        // The scriptlets run with what package scripts keep.
        ctx.package_tool(&mut install);
        let result = ctx.run(&mut install);
        // Take the masks away even when the installation failed.
        for path in &masked {
            fs::remove_file(path).map_err(|e| io(path, e))?;
        }
        result?;

        for p in &o.gpgkeys_fromtree {
            import_key(ctx, &o, &ctx.in_tree(p))?;
        }

        let files = package_files(ctx, dir, &input.files)?;
        let packages = installed(ctx, &o, &files)?;
        if packages.len() < input.files.len() {
            return Err(format!(
                "rpm installed {} packages of the {} given",
                packages.len(),
                input.files.len()
            ));
        }
        println!("{} packages installed", packages.len());
        Ok(json!({"packages": packages}))
    }
}
