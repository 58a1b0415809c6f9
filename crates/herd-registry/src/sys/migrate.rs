//! Taking a `SO_REUSEPORT` socket out of its group without losing its queue.
//!
//! When a listening socket of a reuseport group closes (or is shut down), the connections
//! already queued on it are reset, unless the kernel may *migrate* them to another socket of
//! the group. Linux (5.14 and later) migrates when the `net.ipv4.tcp_migrate_req` sysctl is 1,
//! or when the group carries an eBPF program of type `BPF_PROG_TYPE_SK_REUSEPORT` loaded with
//! the expected attach type `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE` (see the kernel's
//! `net/core/sock_reuseport.c`, `reuseport_migrate_sock`, and `bpf(2)`).
//!
//! The program here is the smallest such program: `r0 = SK_PASS; exit`. It selects no socket,
//! so the kernel falls back to its own hash for every choice, new connections and migrations
//! alike: distribution is unchanged, and queued connections move instead of being reset. A
//! steering program (a later policy) takes the same place.
//!
//! Loading it needs `CAP_BPF` (or `CAP_SYS_ADMIN`); without it, or on an older kernel, the
//! sysctl decides.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// `BPF_PROG_LOAD`, from `linux/bpf.h`'s `enum bpf_cmd`.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_SK_REUSEPORT`, from `enum bpf_prog_type`.
const BPF_PROG_TYPE_SK_REUSEPORT: u32 = 21;
/// `BPF_SK_REUSEPORT_SELECT_OR_MIGRATE`, from `enum bpf_attach_type`.
const BPF_SK_REUSEPORT_SELECT_OR_MIGRATE: u32 = 40;
/// `SO_ATTACH_REUSEPORT_EBPF`, from `asm-generic/socket.h` (the libc crate lacks it on Linux).
const SO_ATTACH_REUSEPORT_EBPF: libc::c_int = 52;

/// The program, two `struct bpf_insn` of 8 bytes each (little-endian x86-64 and aarch64
/// layout: `code`, `dst_reg:4 | src_reg:4`, `off: i16`, `imm: i32`):
/// `BPF_ALU64 | BPF_MOV | BPF_K` (0xb7) r0 = 1 (`SK_PASS`), then `BPF_JMP | BPF_EXIT` (0x95).
static PROGRAM: [[u8; 8]; 2] = [[0xb7, 0x00, 0, 0, 1, 0, 0, 0], [0x95, 0x00, 0, 0, 0, 0, 0, 0]];

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`, padded to the
/// union's 144 bytes with zeros (the kernel requires unknown trailing bytes to be zero).
#[repr(C, align(8))]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    rest: [u8; 72],
}

/// The migrate program, loaded once per process (`None` where it cannot be loaded). The kernel
/// keeps a program alive while a socket group holds it; this descriptor keeps it for groups
/// created later.
fn program() -> Option<&'static OwnedFd> {
    static PROGRAM_FD: OnceLock<Option<OwnedFd>> = OnceLock::new();
    PROGRAM_FD.get_or_init(|| load().ok()).as_ref()
}

fn load() -> io::Result<OwnedFd> {
    let license = c"Dual MIT/GPL";
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SK_REUSEPORT,
        insn_cnt: PROGRAM.len() as u32,
        insns: PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"herd_migrate\0\0\0\0",
        prog_ifindex: 0,
        expected_attach_type: BPF_SK_REUSEPORT_SELECT_OR_MIGRATE,
        rest: [0; 72],
    };
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr` prefix of the size passed; the
    // pointers in it (instructions, license) point at statics that outlive the call. The
    // kernel only reads them. A program descriptor is always created close-on-exec.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_PROG_LOAD, &raw const attr, size_of::<ProgLoad>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded: `fd` is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Attaches the migrate program to the reuseport group of `socket` (a bound or listening
/// `SO_REUSEPORT` socket). Returns whether queued connections of a socket leaving the group
/// will migrate: `true` with the program attached, or where the sysctl already says so.
pub(crate) fn enable(socket: BorrowedFd<'_>) -> bool {
    let attached = program().is_some_and(|prog| {
        let raw = prog.as_raw_fd();
        // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a valid c_int; both
        // descriptors are open for the call.
        let ret = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_ATTACH_REUSEPORT_EBPF,
                (&raw const raw).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        ret == 0
    });
    attached || sysctl_migrates()
}

/// Whether queued connections of a reuseport socket that leaves its group migrate to the
/// group's other sockets: the program loads here, or the sysctl is on.
pub(crate) fn supported() -> bool {
    program().is_some() || sysctl_migrates()
}

/// Whether `net.ipv4.tcp_migrate_req` is on in this network namespace.
fn sysctl_migrates() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_migrate_req").is_ok_and(|v| v.trim() == "1")
}

/// Takes a listening socket out of its reuseport group for every process that holds it:
/// `shutdown(SHUT_RD)` on a listener stops it at once (a worker still holding a duplicate sees
/// `EINVAL` from `accept`), and its queued connections migrate or are reset as [`enable`]
/// said.
pub(crate) fn leave_group(socket: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: shutdown takes a descriptor we borrow and a constant; it touches no memory.
    if unsafe { libc::shutdown(socket.as_raw_fd(), libc::SHUT_RD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
