//! `org.osbuild.grub2.inst`: makes BIOS disk images bootable with GRUB,
//! without grub-install (which wants a real disk and a mounted /boot).
//!
//! The core image is made with the build root's `grub-mkimage` (the modules
//! to read the partition table and the file system that holds the prefix),
//! written at sector `location` of the image file (the gap after the MBR,
//! or GPT's BIOS boot partition), and the first 440 bytes of the MBR get
//! GRUB's boot sector. Then the two patches grub-bios-setup would make:
//! the boot sector learns the core image's first sector, and the core's
//! first sector (diskboot) learns where the rest of the core starts.
//! Before anything is written, the core image is checked to fit where it
//! goes: it must not overlap a partition (other than BIOS boot) nor the
//! GPT header.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

use super::{Ctx, Stage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Grub2InstOptions {
    filename: String,
    platform: String,
    location: Option<u64>,
    core: Core,
    prefix: Prefix,
    #[serde(rename = "sector-size")]
    sector_size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum Core {
    #[serde(rename = "mkimage")]
    Mkimage {
        partlabel: PartLabel,
        filesystem: Filesystem,
        binary: Option<String>,
    },
}

#[derive(Deserialize, Clone, Copy, PartialEq)]
#[serde(rename_all = "lowercase")]
enum PartLabel {
    Gpt,
    Dos,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Filesystem {
    Ext4,
    Xfs,
    Btrfs,
    Iso9660,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Prefix {
    Partition(PrefixPartition),
    Path(PrefixPath),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixPartition {
    #[serde(rename = "type")]
    _kind: PartitionTag,
    partlabel: PartLabel,
    number: u32,
    path: String,
}

#[derive(Deserialize)]
enum PartitionTag {
    #[serde(rename = "partition")]
    Partition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixPath {
    path: String,
}

/// GPT's type for the partition that holds GRUB's core image.
const BIOS_BOOT: &str = "21686148-6449-6E6F-744E-656564454649";
/// In GRUB's boot sector: the 64-bit first sector of the core image.
const KERNEL_SECTOR: u64 = 0x5c;
/// In the core image's first sector (diskboot): the blocklist that loads
/// the rest of the core, the 64-bit start sector then the 16-bit length.
const BLOCKLIST_START: usize = 0x1f4;
const BLOCKLIST_LEN: usize = 0x1fc;
/// Boot code ends here; the disk signature and partition table follow.
const BOOT_CODE: usize = 440;

/// GRUB's name for a partition: `(,msdos1)`, `(,gpt2)`, numbered from 1.
fn prefix_string(p: &Prefix) -> Result<String, String> {
    match p {
        Prefix::Partition(p) => {
            let label = match p.partlabel {
                PartLabel::Dos => "msdos",
                PartLabel::Gpt => "gpt",
            };
            let path = p.path.trim_start_matches('/');
            Ok(format!("(,{label}{})/{path}", p.number + 1))
        }
        Prefix::Path(p) => {
            if !p.path.starts_with('/') {
                return Err(format!("prefix path {:?} must be absolute", p.path));
            }
            Ok(p.path.clone())
        }
    }
}

/// The build root's grub-mkimage: Fedora-family systems call it
/// grub2-mkimage, Debian grub-mkimage. kiln has no build pipeline, so a
/// manifest names the target family's spelling; the other one is the same
/// program.
fn mkimage_binary(requested: Option<&str>) -> String {
    let name = requested.unwrap_or("grub2-mkimage");
    let found = |n: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(n).is_file()))
    };
    let other = match name {
        "grub2-mkimage" => "grub-mkimage",
        "grub-mkimage" => "grub2-mkimage",
        _ => return name.to_owned(),
    };
    if !found(name) && found(other) {
        println!("{name} is not in the build root; using {other}");
        return other.to_owned();
    }
    name.to_owned()
}

fn make_core(ctx: &Ctx, o: &Grub2InstOptions, prefix: &str) -> Result<Vec<u8>, String> {
    let Core::Mkimage {
        partlabel,
        filesystem,
        binary,
    } = &o.core;
    let mut modules = Vec::new();
    if o.platform == "i386-pc" {
        modules.push("biosdisk");
    }
    modules.push(match partlabel {
        PartLabel::Dos => "part_msdos",
        PartLabel::Gpt => "part_gpt",
    });
    modules.push(match filesystem {
        Filesystem::Ext4 => "ext2",
        Filesystem::Xfs => "xfs",
        Filesystem::Btrfs => "btrfs",
        Filesystem::Iso9660 => "iso9660",
    });
    let out = Path::new("/tmp/grub-core.img");
    ctx.run(
        Command::new(mkimage_binary(binary.as_deref()))
            .arg("--directory")
            .arg(format!("/usr/lib/grub/{}", o.platform))
            .arg("--prefix")
            .arg(prefix)
            .arg("--format")
            .arg(&o.platform)
            .args(["--compression", "auto", "--output"])
            .arg(out)
            .args(&modules),
    )?;
    fs::read(out).map_err(|e| format!("{}: {e}", out.display()))
}

struct TablePartition {
    start: u64,
    size: u64,
    kind: String,
}

/// The image's partition table, as the build root's sfdisk reads it.
fn partitions(ctx: &Ctx, image: &Path) -> Result<(String, Vec<TablePartition>), String> {
    let text = ctx
        .output(Command::new("sfdisk").arg("--json").arg(image))
        .map_err(|e| format!("{e} (grub2.inst needs a partition table)"))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("sfdisk --json: {e}"))?;
    let table = &v["partitiontable"];
    let label = table["label"].as_str().unwrap_or_default().to_owned();
    let parts = table["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| TablePartition {
            start: p["start"].as_u64().unwrap_or(0),
            size: p["size"].as_u64().unwrap_or(0),
            kind: p["type"].as_str().unwrap_or_default().to_uppercase(),
        })
        .collect();
    Ok((label, parts))
}

/// Where the core image goes when `location` is not given: the BIOS boot
/// partition of a GPT disk, else the sector after the MBR.
fn default_location(label: &str, parts: &[TablePartition]) -> Result<u64, String> {
    if label == "gpt" {
        return parts
            .iter()
            .find(|p| p.kind == BIOS_BOOT)
            .map(|p| p.start)
            .ok_or_else(|| "a GPT disk needs a BIOS boot partition for GRUB's core image".into());
    }
    Ok(1)
}

/// The core image (sectors `start..end`) must not overwrite the MBR, the
/// GPT header or a partition other than a BIOS boot partition that holds
/// it whole.
fn check_fits(label: &str, parts: &[TablePartition], start: u64, end: u64) -> Result<(), String> {
    if start == 0 {
        return Err("location 0 is the MBR".into());
    }
    let mut inside_bios_boot = false;
    for (i, p) in parts.iter().enumerate() {
        let p_end = p.start + p.size;
        if start >= p_end || end <= p.start {
            continue;
        }
        if p.kind == BIOS_BOOT && start >= p.start && end <= p_end {
            inside_bios_boot = true;
            continue;
        }
        return Err(format!(
            "the core image (sectors {start}..{end}) would overwrite partition {} (sectors {}..{p_end})",
            i + 1,
            p.start
        ));
    }
    if label == "gpt" && !inside_bios_boot {
        return Err(format!(
            "on a GPT disk the core image (sectors {start}..{end}) belongs in the BIOS boot partition"
        ));
    }
    Ok(())
}

fn write_at(f: &mut File, offset: u64, data: &[u8]) -> Result<(), String> {
    f.seek(SeekFrom::Start(offset))
        .and_then(|_| f.write_all(data))
        .map_err(|e| format!("writing at byte {offset}: {e}"))
}

pub(super) struct Grub2Inst;

impl Stage for Grub2Inst {
    const NAME: &'static str = "org.osbuild.grub2.inst";
    type Options = Grub2InstOptions;

    fn run(ctx: &Ctx, o: Grub2InstOptions) -> Result<Value, String> {
        if o.platform != "i386-pc" {
            return Err(format!(
                "platform {:?}: kiln installs GRUB for i386-pc only",
                o.platform
            ));
        }
        let sector = o.sector_size.unwrap_or(512);
        if sector != 512 {
            return Err(format!(
                "sector-size {sector}: BIOS boot uses 512-byte sectors"
            ));
        }
        let image = super::archive::output_file(ctx, &o.filename)?;
        let prefix = prefix_string(&o.prefix)?;
        println!("prefix: {prefix}");
        let mut core = make_core(ctx, &o, &prefix)?;
        let core_sectors = (core.len() as u64).div_ceil(sector);
        let (label, parts) = partitions(ctx, &image)?;
        let location = match o.location {
            Some(l) => l,
            None => default_location(&label, &parts)?,
        };
        check_fits(&label, &parts, location, location + core_sectors)?;

        // diskboot loads sectors start..start+len; grub-mkimage wrote the length.
        if core.len() < 512 {
            return Err(format!(
                "the core image is {} bytes, not a boot image",
                core.len()
            ));
        }
        let len = u16::from_le_bytes([core[BLOCKLIST_LEN], core[BLOCKLIST_LEN + 1]]);
        if u64::from(len) + 1 < core_sectors {
            return Err(format!(
                "the core image has {core_sectors} sectors but its first sector loads {len} more"
            ));
        }
        core[BLOCKLIST_START..BLOCKLIST_START + 8].copy_from_slice(&(location + 1).to_le_bytes());

        let boot_path = format!("/usr/lib/grub/{}/boot.img", o.platform);
        let mut boot = Vec::new();
        File::open(&boot_path)
            .and_then(|mut f| f.read_to_end(&mut boot))
            .map_err(|e| format!("{boot_path}: {e}"))?;
        if boot.len() != 512 {
            return Err(format!(
                "{boot_path} is {} bytes, not one sector",
                boot.len()
            ));
        }
        let k = KERNEL_SECTOR as usize;
        boot[k..k + 8].copy_from_slice(&location.to_le_bytes());

        let mut f = File::options()
            .read(true)
            .write(true)
            .open(&image)
            .map_err(|e| format!("{}: {e}", image.display()))?;
        write_at(&mut f, location * sector, &core)?;
        // Only the boot code: the disk signature and partition table stay.
        write_at(&mut f, 0, &boot[..BOOT_CODE])?;
        f.sync_all()
            .map_err(|e| format!("{}: {e}", image.display()))?;
        println!(
            "core image: {} bytes at sector {location}; boot sector points at it",
            core.len()
        );
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(start: u64, size: u64, kind: &str) -> TablePartition {
        TablePartition {
            start,
            size,
            kind: kind.into(),
        }
    }

    #[test]
    fn the_core_image_fits_the_mbr_gap_or_the_bios_boot_partition_only() {
        let dos = [part(2048, 4096, "83")];
        assert!(check_fits("dos", &dos, 1, 60).is_ok());
        let e = check_fits("dos", &dos, 2048, 2100).unwrap_err();
        assert!(e.contains("partition 1"), "{e}");
        assert!(check_fits("dos", &dos, 0, 60).is_err());

        let gpt = [part(2048, 2048, BIOS_BOOT), part(4096, 8192, "0FC63DAF")];
        assert!(check_fits("gpt", &gpt, 2048, 2110).is_ok());
        assert!(check_fits("gpt", &gpt, 1, 60).is_err(), "GPT header");
        assert!(check_fits("gpt", &gpt, 4000, 4200).is_err(), "spills over");
        assert_eq!(default_location("gpt", &gpt).unwrap(), 2048);
        assert_eq!(default_location("dos", &dos).unwrap(), 1);
    }

    #[test]
    fn prefixes_name_the_partition_from_one() {
        let p: Prefix = serde_json::from_value(serde_json::json!(
            {"type": "partition", "partlabel": "dos", "number": 0, "path": "/boot/grub"}
        ))
        .unwrap();
        assert_eq!(prefix_string(&p).unwrap(), "(,msdos1)/boot/grub");
        let p: Prefix = serde_json::from_value(serde_json::json!({"path": "/boot/grub2"})).unwrap();
        assert_eq!(prefix_string(&p).unwrap(), "/boot/grub2");
    }
}
