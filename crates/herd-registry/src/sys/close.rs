//! Closing many descriptors in few system calls: `close_range(2)` over each run of
//! consecutive numbers. The primary closes its copy of every connection a worker took; a
//! batch of acks names connections accepted together, whose numbers are mostly consecutive
//! (the kernel hands out the lowest free number).

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

/// Closes every descriptor of `fds`: each run of consecutive numbers in one `close_range`,
/// a lone one (or a run `close_range` refused, before Linux 5.9) with `close`.
pub(crate) fn close_all(fds: Vec<OwnedFd>) {
    if fds.len() < 2 {
        return drop(fds);
    }
    let mut raw: Vec<RawFd> = fds.into_iter().map(IntoRawFd::into_raw_fd).collect();
    raw.sort_unstable();
    let mut start = 0;
    while start < raw.len() {
        let mut end = start;
        while end + 1 < raw.len() && raw[end + 1] == raw[end] + 1 {
            end += 1;
        }
        let run = &raw[start..=end];
        // SAFETY: every number in `run[0]..=run[last]` is one this function owns (taken out of
        // an `OwnedFd` above; distinct, since owned descriptors are, and consecutive), so the
        // range closes exactly those and nothing another owner holds.
        let closed = run.len() > 1
            && unsafe { libc::syscall(libc::SYS_close_range, run[0], run[run.len() - 1], 0) } == 0;
        if !closed {
            for &fd in run {
                // SAFETY: `fd` came out of an `OwnedFd` above and is not closed yet: owning it
                // again closes it once, when dropped here.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    /// Whether the peer of `stream` is closed: a read gives end of stream, not `WouldBlock`.
    /// (Asked through the peer, not by number: another test's thread may reuse a number.)
    fn peer_closed(mut stream: &UnixStream) -> bool {
        match stream.read(&mut [0u8; 1]) {
            Ok(0) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            other => panic!("read: {other:?}"),
        }
    }

    /// Consecutive and lone descriptors given are all closed, and one kept is not.
    #[test]
    fn every_descriptor_given_is_closed_and_no_other() {
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..6).map(|_| UnixStream::pair().unwrap()).collect();
        // Duplicated together, the far ends take consecutive numbers (the lowest free ones,
        // unless another test's thread takes one meanwhile): runs for `close_range`.
        let dups: Vec<UnixStream> = pairs.iter().map(|(_, far)| far.try_clone().unwrap()).collect();
        let mut given = Vec::new();
        let mut kept = None;
        let mut ours = Vec::new();
        for (i, ((mine, _far), dup)) in pairs.into_iter().zip(dups).enumerate() {
            mine.set_nonblocking(true).unwrap();
            ours.push(mine);
            if i == 2 {
                kept = Some(dup);
            } else {
                given.push(OwnedFd::from(dup));
            }
        }
        super::close_all(given);
        for (i, mine) in ours.iter().enumerate() {
            assert_eq!(peer_closed(mine), i != 2, "descriptor {i}");
        }
        drop(kept);
    }
}
