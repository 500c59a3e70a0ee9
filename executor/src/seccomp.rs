//! The seccomp filter every stage runs under (bubblewrap's `--seccomp`):
//! what no stage and no package script needs and what would reach past
//! the sandbox into the build host's kernel is refused with `EPERM`:
//! loading or removing kernel modules, kexec, bpf, the kernel keyrings,
//! ptrace and cross-process memory access, perf events, file handles
//! (`open_by_handle_at`, the classic way out of a bind mount), swap, reboot,
//! process accounting and userfaultfd, and a new user namespace (`unshare`
//! or `clone` with `CLONE_NEWUSER`: inside one, a package script would have
//! every capability again, over whatever it mounts there). A second filter
//! answers `clone3` with `ENOSYS`, as if the kernel had none: its flags are
//! in memory a filter cannot read, and glibc then falls back to `clone`,
//! which the first filter checks. Everything else is allowed; a system
//! call of another architecture (a 32-bit ABI) ends the process, as the
//! filter cannot name its numbers.
//!
//! The filter is compiled with seccompiler (pure Rust, no libseccomp) for
//! the architecture the executor runs on.

use std::collections::BTreeMap;
use std::io::{Seek, Write};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The system calls refused, by name (for the tests and the docs) and number.
pub fn refused() -> Vec<(&'static str, libc::c_long)> {
    let mut calls = vec![
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("bpf", libc::SYS_bpf),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("reboot", libc::SYS_reboot),
        ("acct", libc::SYS_acct),
        ("userfaultfd", libc::SYS_userfaultfd),
    ];
    #[cfg(target_arch = "x86_64")]
    calls.extend([("iopl", libc::SYS_iopl), ("ioperm", libc::SYS_ioperm)]);
    calls
}

/// The calls refused only with `CLONE_NEWUSER` in their flags (argument 0).
pub fn refused_with_new_user_namespace() -> Vec<(&'static str, libc::c_long)> {
    vec![("unshare", libc::SYS_unshare), ("clone", libc::SYS_clone)]
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))
}

fn err(e: impl std::fmt::Display) -> String {
    format!("seccomp filter: {e}")
}

/// The compiled filters for this architecture: the `EPERM` one and the
/// `ENOSYS` one.
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut rules = refused()
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let new_user = libc::CLONE_NEWUSER as u64;
    for (_, nr) in refused_with_new_user_namespace() {
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(new_user),
            new_user,
        )
        .map_err(err)?;
        rules.insert(nr, vec![SeccompRule::new(vec![condition]).map_err(err)?]);
    }
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch()?,
    )
    .map_err(err)?;
    let enosys = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(err)?;
    Ok(vec![
        BpfProgram::try_from(eperm).map_err(err)?,
        BpfProgram::try_from(enosys).map_err(err)?,
    ])
}

/// The filters as bubblewrap reads them from `--add-seccomp-fd FD`: each
/// the raw `struct sock_filter` array, in a file that is already
/// unlinked, at offset 0.
pub fn program_files() -> std::io::Result<Vec<std::fs::File>> {
    let mut files = Vec::new();
    for program in programs().map_err(std::io::Error::other)? {
        let mut bytes = Vec::with_capacity(program.len() * 8);
        for insn in &program {
            bytes.extend_from_slice(&insn.code.to_ne_bytes());
            bytes.push(insn.jt);
            bytes.push(insn.jf);
            bytes.extend_from_slice(&insn.k.to_ne_bytes());
        }
        let mut file = tempfile::tempfile()?;
        file.write_all(&bytes)?;
        file.rewind()?;
        files.push(file);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_to_whole_instructions() {
        let programs = programs().unwrap();
        // An arch check, one test per refused call, the two returns.
        assert!(programs[0].len() > refused().len(), "{}", programs[0].len());
        let files = program_files().unwrap();
        assert_eq!(files.len(), programs.len());
        for (f, p) in files.iter().zip(&programs) {
            assert_eq!(f.metadata().unwrap().len(), p.len() as u64 * 8);
        }
    }
}
