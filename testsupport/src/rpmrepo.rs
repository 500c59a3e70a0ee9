//! Small RPM repositories for tests: packages built with `rpmbuild` from a
//! few lines each ([`RpmSpec`]), indexed with `createrepo_c`, used as
//! `file://` repositories.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// One test package.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpmSpec<'a> {
    pub name: &'a str,
    /// `[EPOCH:]VERSION-RELEASE`.
    pub evr: &'a str,
    /// `noarch`, `x86_64`, ...
    pub arch: &'a str,
    /// Extra preamble lines: `Requires: libfoo >= 2`, `Provides: ...`.
    pub tags: &'a str,
    /// (path, content) of the files it installs; none: a single
    /// `/usr/share/kiln-test/NAME` holding the name. A path may follow
    /// `%files` directives: `"%doc /usr/share/doc/x/README"`,
    /// `"%lang(de) /usr/share/x/de.txt"`.
    pub files: &'a [(&'a str, &'a str)],
    /// Spec sections appended as written, e.g. scriptlets.
    pub scripts: &'a str,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    std::fs::write(path, data).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The path of a `%files` entry, after its directives.
fn file_path(entry: &str) -> &str {
    if entry.starts_with('%') {
        entry.rsplit(' ').next().unwrap_or(entry)
    } else {
        entry
    }
}

/// Builds the packages under `dir`; returns rpmbuild's `RPMS` directory
/// (one subdirectory per architecture).
pub fn build_rpms(dir: &Path, specs: &[RpmSpec]) -> Result<PathBuf> {
    let top = dir.join("rpmbuild");
    for s in specs {
        let (epoch, vr) = match s.evr.split_once(':') {
            Some((e, vr)) => (format!("Epoch: {e}\n"), vr),
            None => (String::new(), s.evr),
        };
        let (version, release) = vr
            .split_once('-')
            .ok_or_else(|| format!("{}: {:?} is not VERSION-RELEASE", s.name, s.evr))?;
        let default_file = format!("/usr/share/kiln-test/{}", s.name);
        let default_content = format!("{}\n", s.name);
        let files: Vec<(&str, &str)> = if s.files.is_empty() {
            vec![(default_file.as_str(), default_content.as_str())]
        } else {
            s.files.to_vec()
        };
        // The files are written here and copied in by %install, so their
        // content needs no quoting in the spec.
        let root = dir.join(format!("{}-{}-{}-root", s.name, s.evr, s.arch));
        for (entry, content) in &files {
            write(
                &root.join(file_path(entry).trim_start_matches('/')),
                content,
            )?;
        }
        let listed: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
        let spec = format!(
            "%global debug_package %{{nil}}\nName: {name}\n{epoch}Version: {version}\nRelease: {release}\nSummary: kiln test\nLicense: MIT\nBuildArch: {arch}\n{tags}\n%description\nkiln test package\n%install\nmkdir -p %{{buildroot}}\ncp -a {root}/. %{{buildroot}}/\n%files\n{files}\n{scripts}\n",
            name = s.name,
            arch = s.arch,
            tags = s.tags,
            root = root.display(),
            files = listed.join("\n"),
            scripts = s.scripts,
        );
        let path = dir.join(format!("{}-{}-{}.spec", s.name, version, s.arch));
        write(&path, spec)?;
        run(Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .arg("-bb")
            .arg(&path))?;
    }
    Ok(top.join("RPMS"))
}

/// Copies every package under `rpms` into `dest` and indexes it with
/// createrepo_c (`compress`: gz, xz, ...); `dest` is then a repository.
pub fn create_repo(rpms: &Path, dest: &Path, compress: &str) -> Result<()> {
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let read = |d: &Path| std::fs::read_dir(d).map_err(|e| format!("reading {}: {e}", d.display()));
    for arch in read(rpms)?.flatten() {
        for rpm in read(&arch.path())?.flatten() {
            let to = dest.join(rpm.file_name());
            std::fs::copy(rpm.path(), &to)
                .map_err(|e| format!("copying {}: {e}", rpm.path().display()))?;
        }
    }
    run(Command::new("createrepo_c")
        .arg(format!("--general-compress-type={compress}"))
        .arg(dest))?;
    // The build user's executor fetches from it.
    crate::builduser::readable(dest);
    Ok(())
}
