//! osbuild's image-type names, so its own clients can drive kiln: a compose
//! of each of `guest-image` (kiln's qcow2 `disk`), `minimal-raw` (the same
//! disk, raw), `pxe-tar-xz` (kiln's `pxe`: kernel, initramfs and root file
//! system in one `.tar.xz`) and `oci` is built by a real worker from a
//! mirror of real Debian packages and uploaded; each artifact is read back
//! as what its name promises. One worker builds them in turn, so the two
//! disks share its store's checkpoint of the installed tree.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{local_target, Kiln};
use serde_json::{json, Value};

fn finished(s: &Value) -> bool {
    matches!(s["status"].as_str(), Some("success") | Some("failure"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn composes_of_each_upstream_image_type_name_succeed() {
    let kiln = Kiln::start_for_types(&["guest-image", "pxe-tar-xz", "oci"], |_| {}).await;
    let local = kiln.dir.path().join("local-images");
    let worker = kiln.worker("w1.kiln.test", &local_target(&local));
    for (image_type, file) in [
        ("guest-image", "disk.qcow2"),
        ("minimal-raw", "disk.raw"),
        ("pxe-tar-xz", "pxe.tar.xz"),
        ("oci", "image.oci.tar"),
    ] {
        let request = kiln.request_of(image_type, json!([{"type": "local", "upload_options": {}}]));
        let started = std::time::Instant::now();
        let id = kiln.submit(&request).await;
        let done = kiln.wait(&id, Duration::from_secs(900), finished).await;
        eprintln!("{image_type}: {:.1} s", started.elapsed().as_secs_f64());
        assert_eq!(
            done["status"],
            json!("success"),
            "{image_type}: {done}\n{}",
            worker.log()
        );
        let path = local.join(format!("{id}-0-{file}"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match image_type {
            "guest-image" => {
                assert_eq!(&bytes[..4], b"QFI\xfb", "not a qcow2 image");
                let info = Command::new("qemu-img")
                    .args(["info", "--output", "json"])
                    .arg(&path)
                    .output()
                    .unwrap();
                let info: Value = serde_json::from_slice(&info.stdout).unwrap();
                assert_eq!(info["format"], "qcow2", "{info}");
            }
            "minimal-raw" => {
                // A BIOS-bootable raw disk: the MBR's signature, GRUB's boot
                // code, and an ext4 root partition behind the table.
                assert_eq!(&bytes[510..512], &[0x55, 0xaa], "no MBR signature");
                assert!(bytes.len() > 100 << 20, "{} bytes", bytes.len());
                let table = Command::new("sfdisk")
                    .args(["--json"])
                    .arg(&path)
                    .output()
                    .unwrap();
                let table: Value = serde_json::from_slice(&table.stdout).unwrap();
                assert_eq!(
                    table["partitiontable"]["partitions"]
                        .as_array()
                        .map(Vec::len),
                    Some(1),
                    "{table}"
                );
            }
            "pxe-tar-xz" => {
                assert_eq!(&bytes[..6], b"\xfd7zXZ\0", "not xz");
                let list = Command::new("tar").arg("-tJf").arg(&path).output().unwrap();
                assert!(list.status.success());
                let mut names: Vec<String> = String::from_utf8_lossy(&list.stdout)
                    .lines()
                    .map(|l| l.trim_start_matches("./").to_owned())
                    .collect();
                names.sort();
                assert_eq!(names, ["initrd.img", "rootfs.squashfs", "vmlinuz"]);
            }
            _ => {
                let list = Command::new("tar").arg("-tf").arg(&path).output().unwrap();
                let listing = String::from_utf8_lossy(&list.stdout);
                assert!(
                    listing
                        .lines()
                        .any(|l| l.trim_start_matches("./") == "index.json"),
                    "{listing}"
                );
            }
        }
    }
}
