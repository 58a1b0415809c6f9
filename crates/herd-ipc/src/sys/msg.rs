//! `sendmsg(2)` and `recvmsg(2)` with descriptors attached as `SCM_RIGHTS` (see `unix(7)`,
//! `cmsg(3)`).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;

use super::{cvt, cvt_size, retry};

/// The most descriptors one message may carry. The kernel's own ceiling is `SCM_MAX_FD` (253).
pub(crate) const MAX_FDS: usize = 64;

const FD_SIZE: usize = size_of::<RawFd>();

/// Room for one `SCM_RIGHTS` control message of [`MAX_FDS`] descriptors, aligned as a
/// `cmsghdr` must be.
#[repr(C, align(8))]
struct ControlBuf([u8; control_space(MAX_FDS)]);

/// `CMSG_SPACE` for `count` descriptors, computed in a `const` context.
const fn control_space(count: usize) -> usize {
    let align = size_of::<usize>();
    let header = (size_of::<libc::cmsghdr>() + align - 1) & !(align - 1);
    header + ((count * FD_SIZE + align - 1) & !(align - 1))
}

/// What one `recvmsg` gave.
pub(crate) struct Received {
    /// Bytes written at the start of the buffer.
    pub(crate) len: usize,
    /// Descriptors that arrived, owned from the moment they are read out of the header.
    pub(crate) fds: Vec<OwnedFd>,
    /// `MSG_TRUNC`: the message was longer than the buffer and its tail is lost.
    pub(crate) bytes_truncated: bool,
    /// `MSG_CTRUNC`: more descriptors were sent than the control buffer could hold; the kernel
    /// closed the ones that did not fit.
    pub(crate) fds_truncated: bool,
}

fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes (null pointers, zero lengths)
    // is a valid value; zeroing also covers the private padding fields some libcs declare.
    unsafe { std::mem::zeroed() }
}

/// Sends one record: all of `bytes` and `fds`, or nothing. `MSG_NOSIGNAL` turns a closed peer
/// into `EPIPE` instead of a process-killing `SIGPIPE`.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    let mut control = ControlBuf([0; control_space(MAX_FDS)]);
    let mut msg = empty_msghdr();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        write_rights(&mut control, fds);
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control_space(fds.len()) as _;
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: msg points at `iov` and `control`, both alive and correctly sized for this call.
    retry(|| cvt_size(unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, flags) }))
}

/// Receives one record of at most `max_bytes` into `buf` (cleared, then holding the bytes
/// received) and at most `max_fds` descriptors, each born close-on-exec (`MSG_CMSG_CLOEXEC`).
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max_bytes: usize,
    max_fds: usize,
    nonblocking: bool,
) -> io::Result<Received> {
    let max_fds = max_fds.min(MAX_FDS);
    buf.clear();
    buf.reserve(max_bytes);
    // Receiving into the spare capacity avoids zeroing up to 64 KiB for every message.
    let spare: &mut [MaybeUninit<u8>] = &mut buf.spare_capacity_mut()[..max_bytes];
    let mut iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: max_bytes };
    let mut control = ControlBuf([0; control_space(MAX_FDS)]);
    let mut msg = empty_msghdr();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if max_fds > 0 {
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = control_space(max_fds) as _;
    }
    let flags = libc::MSG_CMSG_CLOEXEC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    // SAFETY: msg points at `iov` (over `buf`) and `control`, alive and sized as declared.
    let len = retry(|| cvt_size(unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, flags) }))?;

    let fds = read_rights(&msg);
    // SAFETY: recvmsg wrote `min(len, max_bytes)` bytes (len exceeds it only with MSG_TRUNC)
    // at the start of the spare capacity, which holds at least `max_bytes`.
    unsafe { buf.set_len(len.min(max_bytes)) };
    Ok(Received {
        len,
        fds,
        bytes_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
        fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
}

/// One message of a [`send_many`].
pub(crate) struct Outgoing<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) fds: &'a [BorrowedFd<'a>],
}

/// Sends several records in one `sendmmsg(2)`, in order, each whole or not at all: how many
/// were sent (at least one), or the error of the first. A later failure (a full queue, say)
/// only shortens the count; the next call reports it.
pub(crate) fn send_many(
    sock: BorrowedFd<'_>,
    messages: &[Outgoing<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    if messages.iter().any(|m| m.fds.len() > MAX_FDS) {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let count = messages.len().min(MAX_BATCH);
    let messages = &messages[..count];
    let mut iovs: Vec<libc::iovec> = messages
        .iter()
        .map(|m| libc::iovec {
            iov_base: m.bytes.as_ptr().cast_mut().cast(),
            iov_len: m.bytes.len(),
        })
        .collect();
    let mut controls: Vec<ControlBuf> = Vec::with_capacity(count);
    for m in messages {
        let mut control = ControlBuf([0; control_space(MAX_FDS)]);
        write_rights(&mut control, m.fds);
        controls.push(control);
    }
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(count);
    for (i, m) in messages.iter().enumerate() {
        let mut msg = empty_msghdr();
        msg.msg_iov = &mut iovs[i];
        msg.msg_iovlen = 1;
        if !m.fds.is_empty() {
            msg.msg_control = controls[i].0.as_mut_ptr().cast();
            msg.msg_controllen = control_space(m.fds.len()) as _;
        }
        headers.push(libc::mmsghdr { msg_hdr: msg, msg_len: 0 });
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    let sent = retry(|| {
        // SAFETY: every header points at its own iovec and control buffer, alive and sized as
        // declared until the call returns; `count` is the length of `headers`.
        cvt(unsafe {
            libc::sendmmsg(sock.as_raw_fd(), headers.as_mut_ptr(), count as libc::c_uint, flags)
        })
    })?;
    Ok(sent as usize)
}

/// Fills `control` with one `SCM_RIGHTS` message of `fds` (nothing for none).
fn write_rights(control: &mut ControlBuf, fds: &[BorrowedFd<'_>]) {
    if fds.is_empty() {
        return;
    }
    let data_len = fds.len() * FD_SIZE;
    let mut msg = empty_msghdr();
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control_space(fds.len()) as _;
    // SAFETY: msg_control points at a buffer aligned for cmsghdr and at least
    // control_space(fds.len()) bytes long, so the first header exists and is non-null.
    let header = unsafe { &mut *libc::CMSG_FIRSTHDR(&msg) };
    header.cmsg_level = libc::SOL_SOCKET;
    header.cmsg_type = libc::SCM_RIGHTS;
    // SAFETY: CMSG_LEN is pure arithmetic.
    header.cmsg_len = unsafe { libc::CMSG_LEN(data_len as libc::c_uint) } as _;
    // SAFETY: the header's data area holds `data_len` bytes inside `control`.
    let data = unsafe { libc::CMSG_DATA(header) };
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: `i * FD_SIZE + FD_SIZE <= data_len`; the area may be unaligned for c_int.
        unsafe { ptr::write_unaligned(data.add(i * FD_SIZE).cast::<RawFd>(), fd.as_raw_fd()) };
    }
}

/// The most messages one [`send_many`] or [`recv_many`] moves.
pub(crate) const MAX_BATCH: usize = 64;

/// Receives up to `count` queued records (at most [`MAX_BATCH`]) in one `recvmmsg(2)`, each
/// of at most `max_bytes` bytes and `max_fds` descriptors (born close-on-exec), without
/// waiting: what was queued (at least one), or the error of the first receive (`EAGAIN` when
/// none was). Record `i`'s bytes are written at `i * max_bytes` in `buf` (its length is set
/// to cover every slot); a record of length 0 with no descriptors is end of stream, and ends
/// the batch. Fewer records than `count` means the queue was found empty.
pub(crate) fn recv_many(
    sock: BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    count: usize,
    max_bytes: usize,
    max_fds: usize,
) -> io::Result<Vec<Received>> {
    let max_fds = max_fds.min(MAX_FDS);
    let count = count.clamp(1, MAX_BATCH);
    // Zeroed once and kept by the caller, so a batch allocates nothing for its bytes.
    if buf.len() < count * max_bytes {
        buf.resize(count * max_bytes, 0);
    }
    let mut iovs: Vec<libc::iovec> = buf
        .chunks_mut(max_bytes)
        .take(count)
        .map(|slot| libc::iovec { iov_base: slot.as_mut_ptr().cast(), iov_len: max_bytes })
        .collect();
    let mut controls: Vec<ControlBuf> = (0..if max_fds > 0 { count } else { 0 })
        .map(|_| ControlBuf([0; control_space(MAX_FDS)]))
        .collect();
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(count);
    for (i, iov) in iovs.iter_mut().enumerate() {
        let mut msg = empty_msghdr();
        msg.msg_iov = iov;
        msg.msg_iovlen = 1;
        if max_fds > 0 {
            msg.msg_control = controls[i].0.as_mut_ptr().cast();
            msg.msg_controllen = control_space(max_fds) as _;
        }
        headers.push(libc::mmsghdr { msg_hdr: msg, msg_len: 0 });
    }
    let flags = libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT;
    let got = retry(|| {
        // SAFETY: every header points at its own iovec (a `max_bytes` slot of `buf`) and
        // control buffer, alive and sized as declared; the count passed is `headers`' length.
        cvt(unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                headers.as_mut_ptr(),
                headers.len() as libc::c_uint,
                flags,
                ptr::null_mut(),
            )
        })
    })? as usize;
    let mut out = Vec::with_capacity(got);
    for header in &headers[..got] {
        let msg = &header.msg_hdr;
        let len = header.msg_len as usize;
        let fds = read_rights(msg);
        let end = len == 0 && fds.is_empty();
        out.push(Received {
            len,
            fds,
            bytes_truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
            fds_truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
        });
        if end {
            break;
        }
    }
    Ok(out)
}

/// The descriptors of a received header's `SCM_RIGHTS` messages, owned at once.
fn read_rights(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    if msg.msg_control.is_null() || msg.msg_controllen == 0 {
        return fds;
    }
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR checks the length.
    let mut header = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !header.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies inside the buffer.
        let h = unsafe { &*header };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN is pure arithmetic.
            let data_len = h.cmsg_len as usize - unsafe { libc::CMSG_LEN(0) } as usize;
            // SAFETY: the data area of a header inside the buffer is inside the buffer.
            let data = unsafe { libc::CMSG_DATA(header) };
            for i in 0..data_len / FD_SIZE {
                // SAFETY: in bounds of the data area; the read may be unaligned.
                let raw = unsafe { ptr::read_unaligned(data.add(i * FD_SIZE).cast::<RawFd>()) };
                // SAFETY: SCM_RIGHTS installed a fresh descriptor in this process for us
                // alone; wrapping it at once means it is closed on every path.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `header` is a valid header inside the buffer described by `msg`.
        header = unsafe { libc::CMSG_NXTHDR(msg, header) };
    }
    fds
}
