//! Small Debian repositories for tests: packages built with `dpkg-deb` from
//! a control file, indexed with `apt-ftparchive` (suite `test`, component
//! `main`, `binary-amd64`), served from a directory as `file://`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

pub struct DebRepo {
    dir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd.output().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn write(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(path, data).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn mkdir(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

impl DebRepo {
    /// An empty repository in `dir`, readable by every user (the build
    /// user's executor fetches from it).
    pub fn new(dir: &Path) -> Result<DebRepo> {
        mkdir(&dir.join("pool/main"))?;
        crate::builduser::readable(dir);
        Ok(DebRepo {
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// The repository as an apt sources line, trusted (it is unsigned).
    pub fn source_line(&self) -> String {
        format!("deb [trusted=yes] {} test main", self.url())
    }

    /// Builds a package (`Architecture: all`) with `relations` as extra control
    /// lines (e.g. `"Depends: b (>= 2)\n"`) and a README; returns its path.
    pub fn add(&self, name: &str, version: &str, relations: &str) -> Result<PathBuf> {
        self.add_with_postinst(name, version, relations, None)
    }

    /// As [`DebRepo::add`], with `postinst` (a whole script, `#!` line
    /// included) as the package's maintainer script.
    pub fn add_with_postinst(
        &self,
        name: &str,
        version: &str,
        relations: &str,
        postinst: Option<&str>,
    ) -> Result<PathBuf> {
        let pool = self.dir.join("pool/main");
        let root = pool.join(format!("{name}-build"));
        mkdir(&root.join("DEBIAN"))?;
        if let Some(script) = postinst {
            let path = root.join("DEBIAN/postinst");
            write(&path, script)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let doc = root.join("usr/share/doc").join(name);
        mkdir(&doc)?;
        write(&doc.join("README"), format!("{name} {version}\n"))?;
        write(
            &root.join("DEBIAN/control"),
            format!(
                "Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: kiln tests <kiln@localhost>\n{relations}Description: kiln test package {name}\n"
            ),
        )?;
        let deb = pool.join(format!("{name}_{version}_all.deb"));
        run(Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb))?;
        std::fs::remove_dir_all(&root).map_err(|e| format!("removing {}: {e}", root.display()))?;
        Ok(deb)
    }

    /// Puts an existing package file into the pool (hard-linked when it can).
    pub fn add_file(&self, deb: &Path) -> Result<PathBuf> {
        let name = deb
            .file_name()
            .ok_or_else(|| format!("{} is not a file", deb.display()))?;
        let to = self.dir.join("pool/main").join(name);
        if std::fs::hard_link(deb, &to).is_err() {
            std::fs::copy(deb, &to).map_err(|e| format!("copying {}: {e}", deb.display()))?;
        }
        Ok(to)
    }

    /// (Re)writes `Packages` and `Release` for what the pool holds.
    pub fn index(&self) -> Result<()> {
        let bin = self.dir.join("dists/test/main/binary-amd64");
        mkdir(&bin)?;
        let packages = run(Command::new("apt-ftparchive")
            .arg("packages")
            .arg("pool")
            .current_dir(&self.dir))?;
        write(&bin.join("Packages"), packages)?;
        self.release()
    }

    /// (Re)writes `Release` for the index files `dists/test` holds now, so
    /// a test can replace them (a damaged or hostile index, correctly listed).
    pub fn release(&self) -> Result<()> {
        let release = run(Command::new("apt-ftparchive")
            .args([
                "-o",
                "APT::FTPArchive::Release::Suite=test",
                "-o",
                "APT::FTPArchive::Release::Codename=test",
                "-o",
                "APT::FTPArchive::Release::Components=main",
                "-o",
                "APT::FTPArchive::Release::Architectures=amd64",
                "release",
                "dists/test",
            ])
            .current_dir(&self.dir))?;
        write(&self.dir.join("dists/test/Release"), release)
    }
}
