//! The RPM test repository: packages built with rpmbuild from [`SPECS`]
//! and indexed with createrepo_c, standing in for Rocky's (which this
//! machine cannot reach).

use std::path::PathBuf;

use kiln_testsupport::rpmrepo::{self, RpmSpec};

/// Written by kiln-base's %post, into a directory the package owns files in.
pub(crate) const POST_MARK: &str = "/usr/share/kiln/post-ran";

pub(crate) const SPECS: &[RpmSpec<'static>] = &[
    // Just enough of a base system for groupadd/useradd --root.
    RpmSpec {
        name: "kiln-setup",
        evr: "1.0-1",
        arch: "noarch",
        tags: "",
        files: &[
            ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("/etc/group", "root:x:0:\nwheel:x:10:\n"),
            ("/etc/shadow", "root:*:19000:0:99999:7:::\n"),
            ("/etc/gshadow", "root:::\nwheel:::\n"),
            ("/home/README", "home directories\n"),
        ],
        scripts: "",
    },
    RpmSpec {
        name: "kiln-lib",
        evr: "1.0-1",
        arch: "noarch",
        tags: "",
        files: &[],
        scripts: "",
    },
    RpmSpec {
        name: "kiln-lib",
        evr: "1:2.0-1",
        arch: "noarch",
        tags: "",
        files: &[],
        scripts: "",
    },
    RpmSpec {
        name: "kiln-base",
        evr: "1.0-1",
        arch: "x86_64",
        tags: "Requires: kiln-lib >= 1:2.0\nRequires: kiln-setup",
        files: &[
            ("/usr/bin/kiln-hello", "kiln hello\n"),
            ("%doc /usr/share/doc/kiln-base/README", "read me\n"),
            ("%lang(de) /usr/share/kiln/de.txt", "Hallo\n"),
            ("%lang(fr) /usr/share/kiln/fr.txt", "Bonjour\n"),
        ],
        // A Lua scriptlet: it runs in the tree, which has no shell.
        scripts: "%post -p <lua>\nlocal f = io.open(\"/usr/share/kiln/post-ran\", \"w\")\nf:write(\"post ran\\n\")\nf:close()\n",
    },
    // Stands in for Rocky's openssh-server: its %post makes host keys, as
    // package scripts do (Rocky's own makes them at boot; Debian's at install).
    RpmSpec {
        name: "openssh-server",
        evr: "8.7p1-1",
        arch: "x86_64",
        tags: "Requires: kiln-setup",
        files: &[("/etc/ssh/sshd_config", "PermitRootLogin no\n")],
        scripts: "%post -p <lua>\n\
            for _, t in ipairs({\"ecdsa\", \"ed25519\", \"rsa\"}) do\n\
              local f = io.open(\"/etc/ssh/ssh_host_\" .. t .. \"_key\", \"w\")\n\
              f:write(\"-----BEGIN OPENSSH PRIVATE KEY-----\\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\\n-----END OPENSSH PRIVATE KEY-----\\n\")\n\
              f:close()\n\
              f = io.open(\"/etc/ssh/ssh_host_\" .. t .. \"_key.pub\", \"w\")\n\
              f:write(\"ssh-\" .. t .. \" AAAA root@build\\n\")\n\
              f:close()\n\
            end\n\
            local m = io.open(\"/etc/machine-id\", \"w\")\n\
            m:write(\"0123456789abcdef0123456789abcdef\\n\")\n\
            m:close()\n",
    },
    RpmSpec {
        name: "kiln-extra",
        evr: "1.0-1",
        arch: "noarch",
        tags: "",
        files: &[],
        scripts: "",
    },
];

pub(crate) struct Repo {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub(crate) fn repo() -> Repo {
    let dir = kiln_testsupport::builduser::dir();
    let rpms = rpmrepo::build_rpms(dir.path(), SPECS).unwrap();
    let path = dir.path().join("repo");
    rpmrepo::create_repo(&rpms, &path, "gz").unwrap();
    Repo { dir, path }
}

impl Repo {
    /// kiln-depsolve's answer for `names` on this repository, as the
    /// composer would get it.
    pub(crate) fn solve(&self, names: &[&str]) -> kiln_depsolve::Solution {
        let cache = kiln_testsupport::builduser::dir();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let set = rt
            .block_on(kiln_depsolve::RepoSet::open(kiln_depsolve::RepoConfig {
                arch: "x86_64".into(),
                sources: vec![format!("rpm file://{}", self.path.display())
                    .parse()
                    .unwrap()],
                cache_dir: cache.path().to_owned(),
                keyring: None,
            }))
            .unwrap();
        set.solve(&kiln_depsolve::Request {
            packages: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    pub(crate) fn file(&self, prefix: &str) -> PathBuf {
        std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix}* in the repository"))
    }
}

/// The manifest kiln-manifests writes for the `rocky-9` distribution: an
/// `image_type` image named `filename`, of these packages (depsolved
/// against the test repository) with these customizations.
pub(crate) fn rocky_manifest(
    packages: &[kiln_manifests::generate::PackageFile],
    customizations: &kiln_manifests::customize::ImageCustomizations,
    image_type: &str,
    filename: &str,
) -> serde_json::Value {
    let catalog = kiln_distro::Catalog::embedded().unwrap();
    let rocky = catalog.get("rocky-9").unwrap();
    kiln_manifests::generate::manifest(&kiln_manifests::generate::ImageRequest {
        family: rocky.family,
        arch: "x86_64",
        image_type,
        filename,
        source_epoch: rocky.source_epoch,
        packages,
        customizations,
    })
    .unwrap()
}
