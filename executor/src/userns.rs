//! The build namespace: kiln-osbuild runs as an ordinary user and does its
//! work inside a user namespace of its own, in which it is root.
//!
//! ```text
//! host                          build namespace (the executor)   stage namespace (bubblewrap)
//! subordinate ids S..S+65535 -> 0..65535                       -> 0..65535
//! the executor's user U      -> 65536 (OWNER)                     (not mapped: nobody)
//! everything else            -> nobody                            nobody
//! ```
//!
//! The executor keeps its store, copies trees and hands out its exports as
//! root of the build namespace; the user that started it appears there as
//! [`OWNER`], so the store and output directories that user made are
//! reachable. Each stage runs in a second user namespace, nested in the
//! first ([`crate::sandbox`]), that maps only the subordinate ids: a
//! package script is root over the tree and nothing else. The starting
//! user's files (its configuration, keys and tokens) show up there as
//! nobody's, so neither the kernel's permission checks nor the stage's
//! capabilities let it read them, and no id of the host has any capability
//! that the namespaces grant.
//!
//! Entering needs a subordinate range of 65536 uids and gids
//! (`/etc/subuid`, `/etc/subgid`), shadow's setuid `newuidmap` and
//! `newgidmap` to write the maps, and unprivileged user namespaces;
//! [`preflight`] checks each and says what to configure where one is
//! missing.

use std::ffi::CStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Ids mapped from the subordinate range: 0..65535 inside.
pub const IDS: u32 = 65536;
/// The starting user's uid and gid inside the build namespace.
pub const OWNER: u32 = IDS;

/// Who runs the executor, and the subordinate ranges it maps.
#[derive(Debug, Clone)]
pub struct Host {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub subuid: u32,
    pub subgid: u32,
    newuidmap: PathBuf,
    newgidmap: PathBuf,
}

/// The first range of at least [`IDS`] ids given to `user` (by name or
/// uid) in an `/etc/subuid`-format text.
pub fn subordinate(text: &str, user: &str, id: u32) -> Option<u32> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let (who, start, count) = (f.next()?, f.next()?, f.next()?);
            let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
            (who == user || who.parse::<u32>().ok() == Some(id)).then_some((start, count))
        })
        .find(|(start, count)| *count >= IDS && start.checked_add(IDS).is_some())
        .map(|(start, _)| start)
}

fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result = std::ptr::null_mut();
    // SAFETY: every pointer points to live memory of the given size.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points into `buf`, NUL-terminated.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Checks what entering the build namespace needs; the error says what to
/// configure on this host.
pub fn preflight() -> Result<Host, String> {
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        return Err(
            "kiln builds without privileges and refuses to run as root: run it as an \
             ordinary user with subordinate ids (as root, once: `useradd --system --create-home \
             --home-dir /var/lib/kiln kiln && usermod --add-subuids 100000-165535 \
             --add-subgids 100000-165535 kiln`, then `runuser -u kiln -- ...`)"
                .into(),
        );
    }
    let user = user_name(uid)
        .ok_or_else(|| format!("uid {uid} has no user name (passwd entry): newuidmap needs one"))?;
    let range = |file: &str, id: u32| -> Result<u32, String> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        subordinate(&text, &user, id).ok_or_else(|| {
            format!(
                "user {user} (uid {uid}) has no range of {IDS} subordinate ids in {file}: as \
                 root, `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` \
                 (any range no other user has)"
            )
        })
    };
    let subuid = range("/etc/subuid", uid)?;
    let subgid = range("/etc/subgid", uid)?;
    let tool = |name: &str| {
        find_program(name).ok_or_else(|| {
            format!(
                "{name} is missing: install it (Debian and Ubuntu: `apt-get install uidmap`; \
                 Fedora, RHEL and Rocky: `dnf install shadow-utils`)"
            )
        })
    };
    let (newuidmap, newgidmap) = (tool("newuidmap")?, tool("newgidmap")?);
    if read_number("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err("user namespaces are disabled: as root, `sysctl -w \
             user.max_user_namespaces=65536` (and in /etc/sysctl.d/ to keep it)"
            .into());
    }
    if read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(
            "unprivileged user namespaces are disabled: as root, `sysctl -w \
             kernel.unprivileged_userns_clone=1` (and in /etc/sysctl.d/ to keep it)"
                .into(),
        );
    }
    if find_program("bwrap").is_none() {
        return Err("bwrap is missing: install bubblewrap (`apt-get install bubblewrap`)".into());
    }
    Ok(Host {
        user,
        uid,
        gid,
        subuid,
        subgid,
        newuidmap,
        newgidmap,
    })
}

/// True when this process already runs in the build namespace: uid 0 of a
/// namespace whose map is not the host's identity map.
pub fn inside() -> bool {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    uid == 0 && !map.split_whitespace().eq(["0", "0", "4294967295"])
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Moves this process into a new build namespace and makes it root there.
/// Must run before the process starts a thread (`unshare` refuses
/// otherwise).
pub fn enter(host: &Host) -> Result<(), String> {
    if threads() != 1 {
        return Err("the build namespace must be entered before any thread starts".into());
    }
    let (mut go_r, mut go_w) = std::io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let mut pdeathsig: libc::c_int = 0;
    // SAFETY: `pdeathsig` is a valid pointer to an int.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut pdeathsig as *mut libc::c_int) };
    // SAFETY: the process has one thread (checked above), so the child may
    // allocate and run commands before it exits.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if helper == 0 {
        // The helper stays in the host's namespace: newuidmap must run there.
        drop(go_w);
        let mut b = [0u8; 1];
        let code = match go_r.read(&mut b) {
            Ok(1) => {
                // SAFETY: getppid cannot fail.
                let parent = unsafe { libc::getppid() }.to_string();
                let map = |tool: &Path, sub: u32, own: u32| {
                    Command::new(tool)
                        .arg(&parent)
                        .args(["0", &sub.to_string(), &IDS.to_string()])
                        .args([OWNER.to_string(), own.to_string(), "1".into()])
                        .status()
                        .is_ok_and(|s| s.success())
                };
                if map(&host.newuidmap, host.subuid, host.uid)
                    && map(&host.newgidmap, host.subgid, host.gid)
                {
                    0
                } else {
                    1
                }
            }
            _ => 1,
        };
        // SAFETY: leaves the forked helper without running the parent's
        // exit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(go_r);
    // SAFETY: unshare with a constant flag.
    let unshared = unsafe { libc::unshare(libc::CLONE_NEWUSER) };
    let unshare_err = std::io::Error::last_os_error();
    if unshared == 0 {
        let _ = go_w.write_all(b"x");
    }
    drop(go_w);
    let mut status = 0;
    // SAFETY: waits for the helper forked above.
    unsafe { libc::waitpid(helper, &mut status, 0) };
    if unshared != 0 {
        return Err(format!("unshare(CLONE_NEWUSER): {unshare_err}"));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(format!(
            "newuidmap/newgidmap could not map {IDS} subordinate ids of {} ({}:{}, {}:{}) into \
             the build namespace (their error is above)",
            host.user, host.subuid, IDS, host.subgid, IDS
        ));
    }
    // SAFETY: plain system calls on this process's own credentials.
    unsafe {
        if libc::setresgid(0, 0, 0) != 0
            || libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresuid(0, 0, 0) != 0
        {
            return Err(format!(
                "becoming root in the build namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Changing credentials clears the parent-death signal the worker set.
        if pdeathsig != 0 {
            libc::prctl(libc::PR_SET_PDEATHSIG, pdeathsig as libc::c_ulong);
        }
    }
    Ok(())
}

/// Gives a path (not following links) to the user that started the
/// executor: what it exports is then that user's to read, move and delete.
pub fn give_to_owner(path: &Path) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(OWNER), Some(OWNER))
}

/// [`give_to_owner`] for a whole tree.
pub fn give_tree_to_owner(root: &Path) -> std::io::Result<()> {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        give_to_owner(&p)?;
        let m = std::fs::symlink_metadata(&p)?;
        if m.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_range_of_65536_ids_of_the_user_is_taken() {
        let text = "# comment\nother:100000:65536\nkiln:200000:1000\nkiln:300000:65536\n";
        assert_eq!(subordinate(text, "kiln", 999), Some(300000));
        assert_eq!(subordinate("999:400000:70000\n", "kiln", 999), Some(400000));
        assert_eq!(subordinate(text, "nobody", 65534), None);
        assert_eq!(subordinate("kiln:4294967000:65536\n", "kiln", 1), None);
    }
}
