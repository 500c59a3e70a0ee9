//! The seccomp filter every stage runs under (bubblewrap's `--seccomp`):
//! what no stage and no package script needs and what would reach past
//! the sandbox into the build host's kernel is refused with `EPERM`:
//! loading or removing kernel modules, kexec, bpf, the kernel keyrings,
//! ptrace and cross-process memory access, perf events, file handles
//! (`open_by_handle_at`, the classic way out of a bind mount), swap, reboot,
//! process accounting and userfaultfd. Everything else is allowed; a system
//! call of another architecture (a 32-bit ABI) ends the process, as the
//! filter cannot name its numbers.
//!
//! The filter is compiled with seccompiler (pure Rust, no libseccomp) for
//! the architecture the executor runs on.

use std::collections::BTreeMap;
use std::io::{Seek, Write};

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

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

/// The compiled filter for this architecture.
pub fn program() -> Result<BpfProgram, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| format!("no seccomp filter for this architecture: {e}"))?;
    let rules = refused()
        .into_iter()
        .map(|(_, nr)| (nr, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("seccomp filter: {e}"))
}

/// The filter as bubblewrap reads it from `--seccomp FD`: the raw
/// `struct sock_filter` array, in a file that is already unlinked, at
/// offset 0.
pub fn program_file() -> std::io::Result<std::fs::File> {
    let program = program().map_err(std::io::Error::other)?;
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
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_to_whole_instructions() {
        let p = program().unwrap();
        // An arch check, one test per refused call, the two returns.
        assert!(p.len() > refused().len(), "{}", p.len());
        let f = program_file().unwrap();
        assert_eq!(f.metadata().unwrap().len(), p.len() as u64 * 8);
    }
}
