//! A cluster for the tests: the BSS and SMD test doubles (checking every
//! request against the OpenCHAMI swagger documents), a boot store (on the
//! local file system unless a test brings its own) and a `Deployer` wired to
//! all three.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_boot::{
    BootStore, BssClient, Deployer, ImagePackage, LocalBootImage, ServiceConfig, SmdClient,
};
use kiln_testsupport::openchami::{BssTestDouble, Node, SmdTestDouble};
use object_store::local::LocalFileSystem;
use uuid::Uuid;

pub(crate) const BSS_TOKEN: &str = "bss-token-for-tests";
pub(crate) const SMD_TOKEN: &str = "smd-token-for-tests";
pub(crate) const BASE_URL: &str = "http://boot.cluster.test:8080/boot-images";
pub(crate) const PREFIX: &str = "kiln/pxe";
pub(crate) const GROUP: &str = "compute";
pub(crate) const CMDLINE: &str =
    "root=live:CDLABEL=kiln rd.live.overlay.overlayfs=1 console=ttyS0,115200";
pub(crate) const EXTRA: &str = "ip=dhcp rd.neednet=1";

pub(crate) fn nodes() -> Vec<Node> {
    vec![
        Node::new("x1000c0s0b0n0", "02:00:00:00:00:01", 1),
        Node::new("x1000c0s0b0n1", "02:00:00:00:00:02", 2),
        Node::new("x1000c0s1b0n0", "02:00:00:00:00:03", 3),
        Node::new("x3000c0s19b1n0", "02:00:00:00:00:09", 9),
    ]
}

/// The members of [`GROUP`]: the first three nodes.
pub(crate) fn group_members() -> Vec<&'static str> {
    vec!["x1000c0s0b0n0", "x1000c0s0b0n1", "x1000c0s1b0n0"]
}

pub(crate) struct Cluster {
    pub bss: BssTestDouble,
    pub smd: SmdTestDouble,
    pub dir: tempfile::TempDir,
    pub deployer: Deployer,
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        Cluster::start_with(|s| s).await
    }

    /// `adjust` may change the store before it is used (e.g. its part size).
    pub(crate) async fn start_with(adjust: impl FnOnce(BootStore) -> BootStore) -> Cluster {
        Cluster::start_on(|dir| {
            std::fs::create_dir_all(dir.join("store")).unwrap();
            adjust(store_at(&dir.join("store")))
        })
        .await
    }

    /// A cluster whose boot store `make_store` builds, given the cluster's
    /// temporary directory ([`Cluster::store_root`] is then unused).
    pub(crate) async fn start_on(make_store: impl FnOnce(&Path) -> BootStore) -> Cluster {
        let bss = BssTestDouble::start(&nodes(), Some(BSS_TOKEN))
            .await
            .unwrap();
        let smd = SmdTestDouble::start(&nodes(), &[(GROUP, &group_members())], Some(SMD_TOKEN))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let deployer = Deployer::new(
            make_store(dir.path()),
            BssClient::new(&ServiceConfig::new(bss.url()).with_token(BSS_TOKEN)).unwrap(),
            SmdClient::new(&ServiceConfig::new(smd.url()).with_token(SMD_TOKEN)).unwrap(),
        );
        Cluster {
            bss,
            smd,
            dir,
            deployer,
        }
    }

    pub(crate) fn store_root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Writes a build's three files under the temporary directory.
    pub(crate) fn build(&self, image_name: &str, rootfs_size: usize) -> LocalBootImage {
        let compose_id = Uuid::new_v4();
        let dir = self.dir.path().join("builds").join(compose_id.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, body: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            p
        };
        let rootfs: Vec<u8> = format!("hsqs {compose_id} ")
            .into_bytes()
            .into_iter()
            .cycle()
            .take(rootfs_size)
            .collect();
        LocalBootImage {
            compose_id,
            image_name: image_name.into(),
            arch: "x86_64".into(),
            kernel: write("vmlinuz", format!("kernel of {compose_id}").into_bytes()),
            initrd: write("initrd.img", format!("initrd of {compose_id}").into_bytes()),
            rootfs: write("rootfs.squashfs", rootfs),
            kernel_cmdline: CMDLINE.into(),
            packages: vec![
                ImagePackage {
                    name: "kernel-core".into(),
                    version: "5.14.0-503.el9".into(),
                    arch: "x86_64".into(),
                },
                ImagePackage {
                    name: "dracut-live".into(),
                    version: "057-70.git20240819.el9".into(),
                    arch: "x86_64".into(),
                },
            ],
            sbom: None,
        }
    }
}

pub(crate) fn store_at(root: &Path) -> BootStore {
    let fs = LocalFileSystem::new_with_prefix(root).unwrap();
    BootStore::new(Arc::new(fs), PREFIX, BASE_URL).unwrap()
}

/// Every file under `root`, relative, sorted.
pub(crate) fn files_under(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
