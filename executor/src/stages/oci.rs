//! `org.osbuild.oci-archive`: an OCI image archive (a tar of an OCI image
//! layout: `oci-layout`, `index.json`, `blobs/sha256/...`) holding the
//! `base` tree as one gzip layer, with the image configuration built from
//! the options.
//!
//! The same tree and SOURCE_DATE_EPOCH give the same bytes: the layer is a
//! name-sorted pax tar with numeric owners, modification times clamped to
//! the epoch and no access or change times; gzip carries no name or time;
//! the JSON documents are written in a fixed key order; the outer tar has
//! fixed owners, modes and times.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::archive;
use super::nodes::{self, TarFlavour};
use super::{Ctx, Stage};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OciArchiveOptions {
    architecture: String,
    variant: Option<String>,
    filename: String,
    #[serde(default)]
    config: ImageConfig,
    #[serde(default, deserialize_with = "annotations")]
    annotations: BTreeMap<String, String>,
}

/// osbuild's `config`: OCI's image configuration, except that the sets
/// (ExposedPorts, Volumes) are arrays.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ImageConfig {
    #[serde(rename = "Cmd")]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Entrypoint")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Env")]
    env: Option<Vec<String>>,
    #[serde(rename = "ExposedPorts")]
    exposed_ports: Option<Vec<String>>,
    #[serde(rename = "User")]
    user: Option<String>,
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
    /// OCI's StopSignal, as osbuild's schema spells the option (a manifest
    /// osbuild would refuse is refused here too).
    #[serde(rename = "StopSiganl")]
    stop_signal: Option<String>,
    #[serde(rename = "Volumes")]
    volumes: Option<Vec<String>>,
    #[serde(rename = "WorkingDir")]
    working_dir: Option<String>,
}

/// Manifest annotations, outside the namespaces osbuild and OCI reserve.
fn annotations<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(d)?;
    if let Some(k) = map.keys().find(|k| {
        k.is_empty() || k.starts_with("org.osbuild") || k.starts_with("org.opencontainer")
    }) {
        return Err(serde::de::Error::custom(format!(
            "annotation {k:?}: the org.osbuild and org.opencontainers namespaces are reserved"
        )));
    }
    Ok(map)
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct Blob {
    digest: String,
    size: u64,
}

fn descriptor(media_type: &str, blob: &Blob) -> Value {
    json!({"mediaType": media_type, "digest": blob.digest, "size": blob.size})
}

fn io(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Writes `data` as a blob of the layout.
fn put_blob(blobs: &Path, data: &[u8]) -> Result<Blob, String> {
    let hex = hex::encode(Sha256::digest(data));
    let path = blobs.join(&hex);
    fs::write(&path, data).map_err(|e| io(&path, e))?;
    Ok(Blob {
        digest: format!("sha256:{hex}"),
        size: data.len() as u64,
    })
}

/// The tree as a gzip layer blob; returns it and the uncompressed tar's
/// digest (the diff id).
fn put_layer(
    ctx: &Ctx,
    base: &str,
    blobs: &Path,
    epoch: Option<u64>,
) -> Result<(Blob, String), String> {
    let mut tar = Command::new("tar");
    tar.args([
        "--create",
        "--format=posix",
        archive::PAX_REPRODUCIBLE,
        "--sort=name",
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=security.capability",
        "--xattrs-include=user.*",
    ]);
    if let Some(e) = epoch {
        tar.arg(format!("--mtime=@{e}")).arg("--clamp-mtime");
    }
    // Device nodes: the layer is written to a file without their
    // placeholders, and their entries appended.
    let mut nodes = nodes::find(Path::new(base))?;
    nodes::clamp_mtimes(&mut nodes, epoch);
    let members = archive::member_names(&nodes, &[".".to_owned()]);
    let _excluded;
    let plain = blobs.join("layer.tar");
    let mut child = None;
    let mut stdout: Box<dyn Read> = if members.is_empty() {
        tar.arg("--file=-");
        tar.arg("--directory").arg(base).arg(".");
        println!("{tar:?}");
        let mut running = tar
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tar: {e}"))?;
        let out = running.stdout.take().ok_or("tar: no stdout")?;
        child = Some(running);
        Box::new(out)
    } else {
        _excluded = archive::exclude_members(&mut tar, &members)?;
        tar.arg("--file").arg(&plain);
        tar.arg("--directory").arg(base).arg(".");
        ctx.run(&mut tar)?;
        archive::append_nodes(ctx, &plain, TarFlavour::Pax, &members)?;
        Box::new(File::open(&plain).map_err(|e| io(&plain, e))?)
    };
    let partial = blobs.join("layer.partial");
    let file = File::create(&partial).map_err(|e| io(&partial, e))?;
    // gzip without a file name or time (flate2's default header).
    let mut gz = flate2::write::GzEncoder::new(
        Hashing {
            inner: std::io::BufWriter::new(file),
            hash: Sha256::new(),
            size: 0,
        },
        flate2::Compression::default(),
    );
    let mut diff = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = stdout.read(&mut buf).map_err(|e| format!("tar: {e}"))?;
        if n == 0 {
            break;
        }
        diff.update(&buf[..n]);
        gz.write_all(&buf[..n]).map_err(|e| io(&partial, e))?;
    }
    match child {
        Some(mut child) => {
            let status = child.wait().map_err(|e| format!("tar: {e}"))?;
            if !status.success() {
                return Err(format!("tar of {base} failed: {status}"));
            }
        }
        None => fs::remove_file(&plain).map_err(|e| io(&plain, e))?,
    }
    let mut hashing = gz.finish().map_err(|e| io(&partial, e))?;
    hashing.flush().map_err(|e| io(&partial, e))?;
    let hex = hex::encode(hashing.hash.finalize());
    let path = blobs.join(&hex);
    fs::rename(&partial, &path).map_err(|e| io(&path, e))?;
    Ok((
        Blob {
            digest: format!("sha256:{hex}"),
            size: hashing.size,
        },
        format!("sha256:{}", hex::encode(diff.finalize())),
    ))
}

/// OCI's `config` object: what the options set, with osbuild's defaults
/// for the command and PATH; sets become `{"item": {}}` maps.
fn runtime_config(c: &ImageConfig) -> Value {
    let set = |items: &[String]| -> Value {
        Value::Object(items.iter().map(|i| (i.clone(), json!({}))).collect())
    };
    let mut m = Map::new();
    m.insert(
        "Cmd".into(),
        json!(c.cmd.clone().unwrap_or_else(|| vec!["sh".into()])),
    );
    if let Some(e) = &c.entrypoint {
        m.insert("Entrypoint".into(), json!(e));
    }
    m.insert(
        "Env".into(),
        json!(c.env.clone().unwrap_or_else(|| vec![DEFAULT_PATH.into()])),
    );
    if let Some(p) = &c.exposed_ports {
        m.insert("ExposedPorts".into(), set(p));
    }
    if let Some(l) = &c.labels {
        m.insert("Labels".into(), json!(l));
    }
    if let Some(s) = &c.stop_signal {
        m.insert("StopSignal".into(), json!(s));
    }
    if let Some(u) = &c.user {
        m.insert("User".into(), json!(u));
    }
    if let Some(v) = &c.volumes {
        m.insert("Volumes".into(), set(v));
    }
    if let Some(w) = &c.working_dir {
        m.insert("WorkingDir".into(), json!(w));
    }
    Value::Object(m)
}

fn timestamp(epoch: Option<u64>) -> String {
    let secs = match epoch {
        Some(e) => i64::try_from(e).unwrap_or(i64::MAX),
        None => chrono::Utc::now().timestamp(),
    };
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn to_bytes(v: &Value) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}

pub(super) struct OciArchive;

impl Stage for OciArchive {
    const NAME: &'static str = "org.osbuild.oci-archive";
    type Options = OciArchiveOptions;

    fn run(ctx: &Ctx, o: OciArchiveOptions) -> Result<Value, String> {
        let base = ctx.input("base")?.path.clone();
        let target = super::archive::output_file(ctx, &o.filename)?;
        let epoch = ctx.args.source_epoch;
        // The layout is staged in the output tree (on disk, unlike /tmp) and
        // removed once archived.
        let work = ctx.in_tree(".kiln-oci-layout");
        let blobs = work.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|e| io(&blobs, e))?;

        let (layer, diff_id) = put_layer(ctx, &base, &blobs, epoch)?;
        let created = timestamp(epoch);
        let mut config = json!({
            "created": created,
            "architecture": o.architecture,
            "os": "linux",
            "config": runtime_config(&o.config),
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "created_by": "kiln-osbuild org.osbuild.oci-archive"}],
        });
        if let Some(v) = &o.variant {
            config["variant"] = json!(v);
        }
        let config = put_blob(&blobs, &to_bytes(&config)?)?;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": descriptor(CONFIG_TYPE, &config),
            "layers": [descriptor(LAYER_TYPE, &layer)],
        });
        if !o.annotations.is_empty() {
            manifest["annotations"] = json!(o.annotations);
        }
        let manifest = put_blob(&blobs, &to_bytes(&manifest)?)?;
        let mut platform = json!({"architecture": o.architecture, "os": "linux"});
        if let Some(v) = &o.variant {
            platform["variant"] = json!(v);
        }
        let mut entry = descriptor(MANIFEST_TYPE, &manifest);
        entry["platform"] = platform;
        let index = json!({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [entry]});
        for (name, doc) in [
            ("index.json", index),
            ("oci-layout", json!({"imageLayoutVersion": "1.0.0"})),
        ] {
            let path = work.join(name);
            fs::write(&path, to_bytes(&doc)?).map_err(|e| io(&path, e))?;
        }

        ctx.run(
            Command::new("tar")
                .args([
                    "--create",
                    "--format=gnu",
                    "--sort=name",
                    "--owner=0",
                    "--group=0",
                    "--numeric-owner",
                    "--mode=u=rwX,go=rX",
                ])
                .arg(format!("--mtime=@{}", epoch.unwrap_or(0)))
                .arg("--file")
                .arg(&target)
                .arg("--directory")
                .arg(&work)
                .args(["oci-layout", "index.json", "blobs"]),
        )?;
        fs::remove_dir_all(&work).map_err(|e| io(&work, e))?;
        println!("manifest {}, layer {}", manifest.digest, layer.digest);
        Ok(Value::Null)
    }
}
