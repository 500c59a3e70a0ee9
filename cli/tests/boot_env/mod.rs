//! What the `kiln boot` tests share: a real OpenID provider issuing tenant
//! A's and tenant B's tokens, the composer (in this process, SQLite) with
//! tenant A's boot grant, a real `kiln-worker` (in this process, mutual
//! TLS) that takes only boot jobs and holds the boot store's and the boot
//! service's credentials, a real S3 boot store (s3s-fs), the SMD double,
//! and the boot service: the BSS double (checking every request against
//! OpenCHAMI's swagger) or the boot-service double (enforcing the rules of
//! the reference's summary).

#![allow(dead_code)]

use std::process::Output;

use kiln_boot::{BootConfig, BootRecord, LocalBootImage};
use kiln_composer::config::{AuthConfig, BootGrant};
use kiln_composer::{AppState, ComposerConfig};
use kiln_testsupport::oidc::{OidcClient, OidcProvider};
use kiln_testsupport::openchami::{
    BootServiceNode, BootServiceTestDouble, BssTestDouble, Node, SmdTestDouble,
};
use kiln_testsupport::storage::S3Server;
use serde_json::{json, Value};

pub(crate) const KILN: &str = env!("CARGO_BIN_EXE_kiln");
pub(crate) const XNAMES: [&str; 3] = ["x1000c0s0b0n0", "x1000c0s0b0n1", "x1000c0s1b0n0"];

pub(crate) struct Run {
    pub out: Output,
}

impl Run {
    pub(crate) fn ok(&self) -> String {
        assert!(
            self.out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&self.out.stdout),
            String::from_utf8_lossy(&self.out.stderr)
        );
        String::from_utf8_lossy(&self.out.stdout).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.ok()).unwrap()
    }

    pub(crate) fn refused(&self) -> String {
        assert!(!self.out.status.success(), "{}", self.ok());
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// Which boot service the worker talks to.
pub(crate) enum BootServiceDouble {
    Bss(BssTestDouble),
    BootService(BootServiceTestDouble),
}

pub(crate) struct BootEnv {
    pub url: String,
    pub state: AppState,
    pub token_a: String,
    pub token_b: String,
    pub s3: S3Server,
    pub smd: SmdTestDouble,
    pub service: BootServiceDouble,
    pub boot: BootConfig,
    pub dir: tempfile::TempDir,
    _provider: OidcProvider,
}

impl BootEnv {
    /// Tenant A may publish `compute*` images to the blade x1000c0s0b0 and
    /// the SMD group `compute` (all three nodes); tenant B has no grant.
    pub(crate) async fn start(boot_service: bool) -> BootEnv {
        let dir = tempfile::tempdir().unwrap();
        let provider = tokio::task::block_in_place(|| {
            OidcProvider::start(
                "kiln",
                &[
                    OidcClient::new("alice-ci", "secret-a", json!({"org_id": "tenant-a"})),
                    OidcClient::new("bob-ci", "secret-b", json!({"org_id": "tenant-b"})),
                ],
                &[],
            )
        })
        .unwrap();
        let token_a = provider
            .token_with_scope("alice-ci", "kiln:read kiln:compose")
            .await
            .unwrap();
        let token_b = provider
            .token_with_scope("bob-ci", "kiln:read kiln:compose")
            .await
            .unwrap();

        let certs = dir.path().join("certs");
        kiln_testsupport::host::gen_certs(&certs, &["--worker", "boot1.kiln.test"]);
        let mut config = ComposerConfig {
            data_dir: dir.path().join("composer"),
            auth: AuthConfig {
                issuer: Some(provider.issuer()),
                audience: Some("kiln".into()),
                tenant_claims: vec!["org_id".into()],
                boot_grants: vec![BootGrant {
                    tenant: "tenant-a".into(),
                    image_names: vec!["compute*".into()],
                    groups: vec!["compute".into()],
                    xnames: vec!["x1000c0s0b0n*".into()],
                    macs: vec![],
                    nids: vec![],
                }],
                ..AuthConfig::default()
            },
            ..Default::default()
        };
        config.jobs.run_in_composer = false;
        config.worker_api.ca = Some(certs.join("ca.pem"));
        config.worker_api.cert = Some(certs.join("composer.pem"));
        config.worker_api.key = Some(certs.join("composer.key"));
        config.worker_api.allowed_domains = vec!["*.kiln.test".into()];
        let tls = kiln_composer::worker_api::load_tls(&config.worker_api)
            .unwrap()
            .unwrap();
        let state = AppState::open(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(kiln_composer::serve(
            state.clone(),
            listener,
            std::future::pending(),
        ));
        let wl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker_api = format!("https://localhost:{}", wl.local_addr().unwrap().port());
        tokio::spawn(kiln_composer::worker_api::serve(
            state.clone(),
            wl,
            tls,
            std::future::pending(),
        ));

        let s3 = S3Server::start("boot").unwrap();
        let nodes: Vec<Node> = XNAMES
            .iter()
            .enumerate()
            .map(|(i, x)| Node::new(x, &format!("02:00:00:00:00:0{i}"), i as u32 + 1))
            .collect();
        let smd = SmdTestDouble::start(&nodes, &[("compute", &XNAMES)], Some("smd-token"))
            .await
            .unwrap();
        let (service, service_toml) = if boot_service {
            let double = BootServiceTestDouble::start(&BootServiceNode::all(&nodes, |_| {
                vec!["compute".into()]
            }))
            .await
            .unwrap();
            let toml = format!(
                "boot_service = {{ url = \"{}\", priority = 40, canary_priority = 70 }}",
                double.url()
            );
            (BootServiceDouble::BootService(double), toml)
        } else {
            let double = BssTestDouble::start(&nodes, Some("bss-token"))
                .await
                .unwrap();
            let toml = format!(
                "bss = {{ url = \"{}\", token = \"bss-token\" }}",
                double.url()
            );
            (BootServiceDouble::Bss(double), toml)
        };
        let boot: BootConfig = toml::from_str(&format!(
            "prefix = \"kiln\"\nbase_url = \"{s3}/boot\"\n{service_toml}\nsmd = {{ url = \"{smd}\", token = \"smd-token\" }}\n[store]\nendpoint = \"{s3}\"\nregion = \"us-east-1\"\nbucket = \"boot\"\naccess_key_id = \"{k}\"\nsecret_access_key = \"{sk}\"\npath_style = true\n",
            s3 = s3.endpoint(),
            smd = smd.url(),
            k = s3.access_key_id,
            sk = s3.secret_access_key
        ))
        .unwrap();

        let worker = kiln_worker::WorkerConfig {
            composer: worker_api,
            ca: Some(certs.join("ca.pem")),
            cert: Some(certs.join("worker-boot1.kiln.test.pem")),
            key: Some(certs.join("worker-boot1.kiln.test.key")),
            job_types: vec![kiln_api::jobs::JobKind::Boot],
            store: dir.path().join("worker/store"),
            work_dir: dir.path().join("worker/jobs"),
            heartbeat_secs: 1,
            poll_secs: 2,
            boot: Some(boot.clone()),
            ..Default::default()
        };
        worker.check().unwrap();
        tokio::spawn(kiln_worker::run(worker, None));
        BootEnv {
            url,
            state,
            token_a,
            token_b,
            s3,
            smd,
            service,
            boot,
            dir,
            _provider: provider,
        }
    }

    pub(crate) fn bss(&self) -> &BssTestDouble {
        match &self.service {
            BootServiceDouble::Bss(b) => b,
            BootServiceDouble::BootService(_) => panic!("this environment runs boot-service"),
        }
    }

    pub(crate) fn boot_service(&self) -> &BootServiceTestDouble {
        match &self.service {
            BootServiceDouble::BootService(b) => b,
            BootServiceDouble::Bss(_) => panic!("this environment runs BSS"),
        }
    }

    /// An image in the store as a compose's boot target leaves it; each
    /// call a new compose, with its own bytes.
    pub(crate) async fn upload(&self, name: &str) -> BootRecord {
        let compose_id = uuid::Uuid::new_v4();
        let build = self.dir.path().join("builds").join(compose_id.to_string());
        std::fs::create_dir_all(&build).unwrap();
        for f in ["vmlinuz", "initrd.img", "rootfs.squashfs"] {
            std::fs::write(build.join(f), format!("{f} of {compose_id}")).unwrap();
        }
        self.boot
            .deployer()
            .unwrap()
            .store()
            .upload(&LocalBootImage {
                compose_id,
                image_name: name.into(),
                arch: "x86_64".into(),
                kernel: build.join("vmlinuz"),
                initrd: build.join("initrd.img"),
                rootfs: build.join("rootfs.squashfs"),
                kernel_cmdline: "rd.live.overlay.overlayfs=1 console=ttyS0".into(),
                packages: vec![],
                sbom: None,
            })
            .await
            .unwrap()
    }

    /// `kiln ARGS --composer URL` with `token`.
    pub(crate) async fn kiln(&self, token: &str, args: &[&str]) -> Run {
        let out = tokio::process::Command::new(KILN)
            .args(args)
            .args(["--composer", &self.url])
            .env("KILN_TOKEN", token)
            .env("KILN_TOKEN_CACHE", "/nonexistent/kiln-tests/token.json")
            .output()
            .await
            .unwrap();
        Run { out }
    }
}
