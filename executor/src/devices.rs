//! Loop devices for the stages that write disk images.
//!
//! Devices are configured with the kernel's autoclear flag and held open by
//! the executor while their stage runs: when the last holder closes them,
//! the kernel detaches them. A killed executor therefore releases its loop
//! devices by itself (mounts live in the stage's mount namespace and die
//! with it); the store's start-up cleanup is the second line of defence.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; detached by the kernel once dropped and no
/// longer used.
pub struct LoopDevice {
    pub path: String,
    _file: File,
}

/// Attaches `backing` (from byte `offset`, `size` bytes, 0 for all).
pub fn attach(backing: &Path, offset: u64, size: u64) -> io::Result<LoopDevice> {
    let image = File::options().read(true).write(true).open(backing)?;
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = format!("/dev/loop{n}");
        if !Path::new(&path).exists() {
            // No udev in containers: make the node ourselves (block major 7).
            let dev = rustix::fs::makedev(7, n as u32);
            rustix::fs::mknodat(
                rustix::fs::CWD,
                path.as_str(),
                rustix::fs::FileType::BlockDevice,
                rustix::fs::Mode::from_raw_mode(0o660),
                dev,
            )?;
        }
        let file = File::options().read(true).write(true).open(&path)?;
        let config = LoopConfig {
            fd: image.as_raw_fd() as u32,
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: offset,
                lo_sizelimit: size,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: the argument points to a fully initialised loop_config.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                LOOP_CONFIGURE as _,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            return Ok(LoopDevice { path, _file: file });
        }
        let err = io::Error::last_os_error();
        // Another process took the device between GET_FREE and CONFIGURE.
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
    }
    Err(io::Error::other("no free loop device after 16 attempts"))
}

/// Detaches a loop device left behind by a dead build.
pub fn detach(device: &str) {
    if let Ok(f) = File::open(device) {
        // SAFETY: LOOP_CLR_FD takes no argument.
        unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD as _) };
    }
}
