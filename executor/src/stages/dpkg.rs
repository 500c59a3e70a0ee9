//! `kiln.dpkg`: installs exactly the depsolved `.deb` files into the tree,
//! as debootstrap or mmdebstrap would, but from a fixed list and without
//! apt:
//!
//! 1. the essential packages are unpacked with the build root's
//!    `dpkg-deb` into a merged-/usr tree (there is no dpkg in the tree yet);
//! 2. in the tree (chroot), `dpkg --install` registers and configures
//!    base-passwd, then base-files, then the whole essential set;
//! 3. the rest is unpacked in dependency order and configured with
//!    `dpkg --configure --pending`: every maintainer script runs, in the tree.
//!
//! No daemon starts (a policy-rc.d refuses), no initramfs is built by the
//! kernel's hooks (`INITRD=No`; the dracut stage makes the one that is
//! used), and the result is checked: dpkg's database must list exactly the
//! requested packages and versions, all fully installed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::{json, Value};

use super::{output, Ctx, Stage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DpkgOptions {
    packages: Vec<Package>,
    #[serde(default, rename = "skip-docs")]
    skip_docs: bool,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Package {
    name: String,
    version: String,
    arch: String,
    checksum: String,
}

/// What dpkg needs to know about a package before installing it.
struct Control {
    essential: bool,
    /// Names this package depends on (Pre-Depends and Depends), any version.
    depends: Vec<String>,
}

/// Where the package files are visible inside the chroot.
const DEBS_IN_TREE: &str = "/var/cache/kiln-debs";
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Runs `f` on every item, on as many threads as there are CPUs; the
/// results in the items' order. For the per-package work that is
/// independent (reading control fields, unpacking the essential set into
/// distinct files): dpkg itself does one package at a time.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, String> + Sync,
) -> Result<Vec<R>, String> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Result<R, String>>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                if let Ok(mut slot) = results[i].lock() {
                    *slot = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| Err("a worker thread failed".into()))
        })
        .collect()
}

fn control(deb: &Path) -> Result<Control, String> {
    let text = output(Command::new("dpkg-deb").arg("--field").arg(deb).args([
        "Essential",
        "Pre-Depends",
        "Depends",
    ]))?;
    let mut fields: HashMap<String, String> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(' ') {
            if let Some(v) = fields.get_mut(&current) {
                v.push(' ');
                v.push_str(rest.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            current = k.trim().to_owned();
            fields.insert(current.clone(), v.trim().to_owned());
        }
    }
    let mut depends = Vec::new();
    for key in ["Pre-Depends", "Depends"] {
        for clause in fields.get(key).map(String::as_str).unwrap_or("").split(',') {
            // Any alternative may be the one in the set; keep them all.
            for alt in clause.split('|') {
                let name = alt.trim().split([' ', '(', ':']).next().unwrap_or("");
                if !name.is_empty() {
                    depends.push(name.to_owned());
                }
            }
        }
    }
    Ok(Control {
        essential: fields
            .get("Essential")
            .is_some_and(|v| v.eq_ignore_ascii_case("yes")),
        depends,
    })
}

/// Dependencies before dependants (a depth-first order; cycles are cut
/// where they are met, as dpkg itself must do for them).
fn dependency_order(names: &[String], controls: &HashMap<String, Control>) -> Vec<String> {
    fn visit(
        n: &str,
        controls: &HashMap<String, Control>,
        state: &mut HashMap<String, u8>,
        out: &mut Vec<String>,
    ) {
        if state.get(n).copied().unwrap_or(0) != 0 {
            return;
        }
        state.insert(n.to_owned(), 1);
        if let Some(c) = controls.get(n) {
            for d in &c.depends {
                if controls.contains_key(d) {
                    visit(d, controls, state, out);
                }
            }
        }
        state.insert(n.to_owned(), 2);
        out.push(n.to_owned());
    }
    let mut state = HashMap::new();
    let mut out = Vec::new();
    for n in names {
        visit(n, controls, &mut state, &mut out);
    }
    out
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Debian's merged /usr: the top-level directories are links into /usr,
/// made before anything is unpacked so that every package lands there.
fn merged_usr(ctx: &Ctx, arch: &str) -> Result<(), String> {
    let mut dirs = vec!["bin", "sbin", "lib"];
    if arch == "amd64" {
        dirs.push("lib64");
    }
    for d in dirs {
        let real = ctx.in_tree(&format!("/usr/{d}"));
        fs::create_dir_all(&real).map_err(|e| io(&real, e))?;
        let link = ctx.in_tree(d);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("usr/{d}"), &link).map_err(|e| io(&link, e))?;
        }
    }
    Ok(())
}

fn dpkg_in_tree(ctx: &Ctx, args: &[&str], debs: &[String]) -> Result<(), String> {
    if debs.is_empty() && !args.contains(&"--configure") {
        return Ok(());
    }
    let mut c = ctx.chroot("dpkg")?;
    c.args(["--force-unsafe-io", "--force-confnew"]);
    c.args(args);
    c.args(debs.iter().map(|d| format!("{DEBS_IN_TREE}/{d}")));
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .env("DEBCONF_NONINTERACTIVE_SEEN", "true")
        .env("INITRD", "No");
    if let Some(epoch) = ctx.args.source_epoch {
        c.env("SOURCE_DATE_EPOCH", epoch.to_string());
    }
    ctx.run(&mut c)
}

pub(super) struct Dpkg;

impl Stage for Dpkg {
    const NAME: &'static str = "kiln.dpkg";
    type Options = DpkgOptions;

    fn run(ctx: &Ctx, o: DpkgOptions) -> Result<Value, String> {
        let input = ctx.input("packages")?;
        let files: BTreeSet<&String> = input.files.iter().collect();
        let mut by_name: BTreeMap<String, Package> = BTreeMap::new();
        for p in &o.packages {
            if !files.contains(&p.checksum) {
                return Err(format!(
                    "package {} {}: {} is not in the packages input",
                    p.name, p.version, p.checksum
                ));
            }
            if by_name.insert(p.name.clone(), p.clone()).is_some() {
                return Err(format!("package {} is listed twice", p.name));
            }
        }
        let arch = o
            .packages
            .iter()
            .map(|p| p.arch.as_str())
            .find(|a| *a != "all")
            .ok_or(
                "no architecture-specific package in the set: cannot tell the tree's architecture",
            )?
            .to_owned();

        // The package files, visible in the chroot under readable names.
        let debs = ctx.in_tree(DEBS_IN_TREE);
        fs::create_dir_all(&debs).map_err(|e| io(&debs, e))?;
        let source = PathBuf::from(&input.path);
        let packages: Vec<&Package> = by_name.values().collect();
        let read = parallel(&packages, |p| control(&source.join(&p.checksum)))?;
        let mut controls = HashMap::new();
        let mut file_of = HashMap::new();
        for (p, c) in packages.iter().zip(read) {
            controls.insert(p.name.clone(), c);
            file_of.insert(p.name.clone(), p.checksum.clone());
        }
        // The input itself, bound read-only into the tree: dpkg only reads the
        // package files, and copying them (hundreds of MB) would be wasted.
        rustix::mount::mount_bind(&source, &debs).map_err(|e| io(&debs, e.into()))?;
        super::remount_read_only(&debs).map_err(|e| io(&debs, e.into()))?;

        merged_usr(ctx, &arch)?;
        let names: Vec<String> = by_name.keys().cloned().collect();
        let order = dependency_order(&names, &controls);
        // The essential set: Essential packages and everything they depend
        // on (libc, for one, is not Essential itself but dpkg needs it).
        let mut base: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = order
            .iter()
            .filter(|n| controls[*n].essential)
            .cloned()
            .collect();
        if todo.is_empty() {
            return Err("the set has no Essential package: it cannot make a working tree".into());
        }
        while let Some(n) = todo.pop() {
            if let Some(c) = controls.get(&n) {
                if base.insert(n.clone()) {
                    todo.extend(
                        c.depends
                            .iter()
                            .filter(|d| controls.contains_key(*d))
                            .cloned(),
                    );
                }
            }
        }
        let essential: Vec<String> = order
            .iter()
            .filter(|n| base.contains(*n))
            .cloned()
            .collect();
        // Unpacked side by side: the essential packages own distinct files
        // (dpkg --unpack below writes them again, in order, and registers them).
        let tree = ctx.tree();
        parallel(&essential, |name| {
            let deb = debs.join(&file_of[name]);
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x --keep-directory-symlink -C \"$2\"")
                .arg("unpack")
                .arg(&deb)
                .arg(tree);
            output(&mut c).map(|_| ())
        })?;
        // dpkg's own state, as a fresh system has it.
        let admin = ctx.in_tree("/var/lib/dpkg");
        fs::create_dir_all(admin.join("updates")).map_err(|e| io(&admin, e))?;
        fs::create_dir_all(admin.join("info")).map_err(|e| io(&admin, e))?;
        for f in ["status", "available"] {
            fs::write(admin.join(f), "").map_err(|e| io(&admin.join(f), e))?;
        }
        fs::write(admin.join("arch"), format!("{arch}\n")).map_err(|e| io(&admin, e))?;
        if o.skip_docs {
            let cfg = ctx.in_tree("/etc/dpkg/dpkg.cfg.d/90kiln-nodoc");
            fs::create_dir_all(cfg.parent().unwrap_or(Path::new("/"))).map_err(|e| io(&cfg, e))?;
            fs::write(
                &cfg,
                "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\npath-exclude=/usr/share/info/*\n",
            )
            .map_err(|e| io(&cfg, e))?;
        }
        let policy = ctx.in_tree(POLICY_RC_D);
        fs::write(
            &policy,
            "#!/bin/sh\n# kiln: no service starts while the image is built\nexit 101\n",
        )
        .map_err(|e| io(&policy, e))?;
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))
            .map_err(|e| io(&policy, e))?;

        let file_list = |names: &[String]| -> Vec<String> {
            names.iter().map(|n| file_of[n].clone()).collect()
        };
        // base-passwd makes the users other packages' scripts need, and
        // base-files the directories; both go first, as debootstrap does.
        let mut rest_essential = essential.clone();
        for first in ["base-passwd", "base-files"] {
            if let Some(pos) = rest_essential.iter().position(|n| n == first) {
                rest_essential.remove(pos);
                dpkg_in_tree(
                    ctx,
                    &["--install", "--force-depends"],
                    &file_list(&[first.to_owned()]),
                )?;
            }
        }
        dpkg_in_tree(
            ctx,
            &["--unpack", "--force-depends"],
            &file_list(&rest_essential),
        )?;
        dpkg_in_tree(
            ctx,
            &[
                "--configure",
                "--pending",
                "--force-configure-any",
                "--force-depends",
            ],
            &[],
        )?;
        let others: Vec<String> = order
            .iter()
            .filter(|n| !base.contains(*n))
            .cloned()
            .collect();
        dpkg_in_tree(ctx, &["--unpack", "--force-depends"], &file_list(&others))?;
        // Without forcing: every dependency must now be satisfied.
        dpkg_in_tree(ctx, &["--configure", "--pending"], &[])?;

        // Leave no trace of the build in the image.
        fs::remove_file(&policy).map_err(|e| io(&policy, e))?;
        rustix::mount::unmount(&debs, rustix::mount::UnmountFlags::empty())
            .map_err(|e| io(&debs, e.into()))?;
        fs::remove_dir(&debs).map_err(|e| io(&debs, e))?;
        for leftover in [
            "/var/lib/dpkg/status-old",
            "/var/lib/dpkg/available-old",
            "/var/cache/debconf/config.dat-old",
            "/var/cache/debconf/templates.dat-old",
        ] {
            let _ = fs::remove_file(ctx.in_tree(leftover));
        }
        // Machine ids, host keys and seeds the scripts made are the manifest's
        // `kiln.identity.clean` stage's to remove, at the end of the pipeline.

        let installed = ctx.output(
            Command::new("dpkg-query")
                .arg(format!("--admindir={}", admin.display()))
                .args([
                    "--show",
                    "--showformat",
                    "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\t${source:Version}\n",
                ]),
        )?;
        let mut listed = Vec::new();
        let mut found = BTreeMap::new();
        let tree = super::copyright::open_tree(ctx.tree())?;
        for line in installed.lines() {
            let f: Vec<&str> = line.split('\t').collect();
            if let [status, name, version, arch, source, source_version] = f.as_slice() {
                if status.trim() != "ii" {
                    return Err(format!(
                        "{name} {version} is not fully installed (dpkg status {:?})",
                        status.trim()
                    ));
                }
                found.insert(name.to_string(), version.to_string());
                // What the SBOM needs: the source package, the file the
                // package came from (the manifest's source names its URL)
                // and, the database declaring none, the licenses of its
                // machine-readable copyright file.
                let mut p = json!({"name": name, "version": version, "arch": arch,
                    "source": {"name": source, "version": source_version}});
                if let Some(requested) = by_name.get(*name) {
                    p["checksum"] = json!(requested.checksum);
                }
                if let Some(license) = super::copyright::declared(&tree, name) {
                    p["license"] = json!(license);
                }
                listed.push(p);
            }
        }
        for p in by_name.values() {
            match found.get(&p.name) {
                Some(v) if *v == p.version => {}
                Some(v) => {
                    return Err(format!(
                        "{} is installed at {v}, not the requested {}",
                        p.name, p.version
                    ))
                }
                None => {
                    return Err(format!(
                        "{} {} is missing from the dpkg database",
                        p.name, p.version
                    ))
                }
            }
        }
        if let Some(extra) = found.keys().find(|n| !by_name.contains_key(*n)) {
            return Err(format!("{extra} is installed but was not requested"));
        }
        Ok(json!({"packages": listed}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_come_before_dependants_and_cycles_end() {
        let mut controls = HashMap::new();
        for (n, deps) in [
            ("a", vec!["b"]),
            ("b", vec!["c", "x"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ] {
            controls.insert(
                n.to_owned(),
                Control {
                    essential: false,
                    depends: deps.into_iter().map(str::to_owned).collect(),
                },
            );
        }
        let names: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let order = dependency_order(&names, &controls);
        assert_eq!(order, ["c", "b", "a", "d"]);
    }
}
