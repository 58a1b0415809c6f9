//! The raw channel: bytes plus descriptors, one record per message.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::Error;
use crate::sys;

/// The largest message, in bytes, any channel sends or receives: 64 KiB. A `SOCK_SEQPACKET`
/// record must fit in the socket's send buffer, and control messages are small.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The most descriptors one message may carry: 64 (the kernel allows up to 253).
pub const MAX_FDS_PER_MESSAGE: usize = sys::msg::MAX_FDS;

/// The most messages one batch call ([`Channel::try_send_batch`], [`Channel::try_recv_batch`])
/// moves: 64.
pub const MAX_BATCH: usize = sys::msg::MAX_BATCH;

/// How many `ECONNRESET` reports one receive reads past before it calls the channel closed.
/// The kernel reports a peer's reset once per peer, and a channel has one peer.
const MAX_RESETS: u32 = 4;

/// What one end of a channel accepts. Both figures are clamped to [`MAX_MESSAGE_BYTES`] and
/// [`MAX_FDS_PER_MESSAGE`]; the same limits apply to what this end sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest message in bytes.
    pub max_bytes: usize,
    /// The most descriptors in one message.
    pub max_fds: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: MAX_MESSAGE_BYTES, max_fds: MAX_FDS_PER_MESSAGE }
    }
}

/// One received message: its bytes and the descriptors that travelled with it, each owned
/// and close-on-exec.
#[derive(Debug)]
pub struct Message {
    /// The payload, exactly as sent.
    pub bytes: Vec<u8>,
    /// The descriptors, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// One end of a bidirectional message channel between two processes (or threads).
///
/// A channel is an `AF_UNIX` `SOCK_SEQPACKET` socket: each [`send`](Channel::send) arrives as
/// one [`recv`](Channel::recv), whole, with its descriptors, in order. Its descriptor stays in
/// blocking mode; the `try_` calls use `MSG_DONTWAIT` and report
/// [`Error::is_would_block`], so the same end can be driven from a poller through
/// [`AsFd`] without changing file status flags.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
    limits: Limits,
}

impl Channel {
    /// Creates a connected pair of ends, both close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), Error> {
        let (a, b) = sys::socket::seqpacket_pair().map_err(|e| Error::io("socketpair", e))?;
        Ok((Channel::wrap(a), Channel::wrap(b)))
    }

    /// Wraps a descriptor that must be a connected `AF_UNIX` `SOCK_SEQPACKET` socket.
    ///
    /// # Errors
    /// [`Error::Io`] with `EINVAL` naming the check that failed when it is another kind of
    /// descriptor; the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<Channel, Error> {
        require_seqpacket(fd.as_fd()).map_err(|e| Error::io("channel from fd", e))?;
        Ok(Channel::wrap(fd))
    }

    pub(crate) fn wrap(fd: OwnedFd) -> Channel {
        Channel { fd, limits: Limits::default() }
    }

    /// This end's limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets this end's limits, clamped to the crate-wide maxima.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = Limits {
            max_bytes: limits.max_bytes.clamp(1, MAX_MESSAGE_BYTES),
            max_fds: limits.max_fds.min(MAX_FDS_PER_MESSAGE),
        };
    }

    /// Sends one message, blocking while the peer's queue is full.
    ///
    /// # Errors
    /// [`Error::Closed`] when the peer is gone; [`Error::Empty`], [`Error::TooLarge`] or
    /// [`Error::TooManyFds`] for a message outside the limits (nothing is sent).
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_with(bytes, fds, false)
    }

    /// Sends one message or fails with [`Error::is_would_block`] when the peer's queue is full.
    pub fn try_send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        self.send_with(bytes, fds, true)
    }

    pub(crate) fn send_with(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        nonblocking: bool,
    ) -> Result<(), Error> {
        self.check(bytes, fds)?;
        let sent = sys::msg::send(self.fd.as_fd(), bytes, fds, nonblocking)
            .map_err(|e| Error::io("sendmsg", e))?;
        if sent != bytes.len() {
            // A SEQPACKET record is sent whole or not at all; anything else is a kernel surprise.
            return Err(Error::io("sendmsg", io::Error::from(io::ErrorKind::WriteZero)));
        }
        Ok(())
    }

    /// Sends several messages in one system call (`sendmmsg(2)`), in order, without waiting:
    /// how many were sent, at least one. Each is sent whole or not at all; the first that did
    /// not fit (a full queue) ends the batch, and the next call reports why. At most 64
    /// messages go per call.
    ///
    /// # Errors
    /// The first message's: [`Error::is_would_block`] when the peer's queue is full,
    /// [`Error::Closed`] when the peer is gone, [`Error::Empty`], [`Error::TooLarge`] or
    /// [`Error::TooManyFds`] for a message outside the limits (a later such message ends the
    /// batch before it).
    pub fn try_send_batch(&self, messages: &[(&[u8], &[BorrowedFd<'_>])]) -> Result<usize, Error> {
        let valid = messages.iter().position(|(bytes, fds)| self.check(bytes, fds).is_err());
        if valid == Some(0) {
            let (bytes, fds) = messages[0];
            return self.check(bytes, fds).map(|()| 0);
        }
        let messages = &messages[..valid.unwrap_or(messages.len())];
        if messages.is_empty() {
            return Ok(0);
        }
        let outgoing: Vec<sys::msg::Outgoing<'_>> =
            messages.iter().map(|&(bytes, fds)| sys::msg::Outgoing { bytes, fds }).collect();
        sys::msg::send_many(self.fd.as_fd(), &outgoing, true).map_err(|e| Error::io("sendmmsg", e))
    }

    fn check(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), Error> {
        if bytes.is_empty() {
            return Err(Error::Empty);
        }
        if bytes.len() > self.limits.max_bytes {
            return Err(Error::TooLarge { len: bytes.len(), max: self.limits.max_bytes });
        }
        if fds.len() > self.limits.max_fds {
            return Err(Error::TooManyFds { count: fds.len(), max: self.limits.max_fds });
        }
        Ok(())
    }

    /// Receives up to `max` queued messages (at most 64, and at most 256 KiB of this end's
    /// byte limit) in one system call (`recvmmsg(2)`), without waiting. Each entry is a
    /// message or that message's error ([`Error::Truncated`], [`Error::FdsTruncated`]:
    /// discarded, descriptors closed); an [`Error::Closed`] entry (end of stream) comes last,
    /// and only once every message is read. Fewer entries than asked for means no further
    /// message was queued (end of stream may still be, for the next call): no call that
    /// fails with `EAGAIN` is needed to learn it. Reads past a reset as [`recv`](Channel::recv) does. `scratch` holds the
    /// bytes during the call; keep it for the next one (it grows to the batch's size once).
    ///
    /// # Errors
    /// [`Error::is_would_block`] when nothing is queued, or the receive's error.
    pub fn try_recv_batch(
        &self,
        max: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Vec<Result<Message, Error>>, Error> {
        let limits = self.limits;
        let max = max.min((256 * 1024 / limits.max_bytes).max(1));
        let mut resets = 0;
        let got = loop {
            match sys::msg::recv_many(
                self.fd.as_fd(),
                scratch,
                max,
                limits.max_bytes,
                limits.max_fds,
            ) {
                // As in `recv_with`: a reset is reported ahead of the peer's last messages.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && resets < MAX_RESETS => {
                    resets += 1;
                }
                other => break other.map_err(|e| Error::io("recvmmsg", e))?,
            }
        };
        let mut out = Vec::with_capacity(got.len());
        for (received, slot) in got.into_iter().zip(scratch.chunks(limits.max_bytes)) {
            let bytes = slot[..received.len.min(limits.max_bytes)].to_vec();
            out.push(if received.fds_truncated && !received.bytes_truncated {
                Err(Error::FdsTruncated { max: limits.max_fds, bytes })
            } else if received.bytes_truncated {
                Err(Error::Truncated { max: limits.max_bytes })
            } else if received.len == 0 && received.fds.is_empty() {
                Err(Error::Closed)
            } else {
                Ok(Message { bytes, fds: received.fds })
            });
        }
        Ok(out)
    }

    /// Half-closes this end: the peer reads every message sent so far, then end of stream
    /// ([`Error::Closed`]), while this end can still receive. A clean way to say "no more
    /// from me" without racing the peer's last messages.
    pub fn shutdown_write(&self) -> Result<(), Error> {
        sys::socket::shutdown_write(self.fd.as_fd()).map_err(|e| Error::io("shutdown", e))
    }

    /// Receives one message, blocking until one arrives.
    ///
    /// Every message the peer sent is delivered before end of stream, even when the peer
    /// closed with messages of ours unread (Linux then reports `ECONNRESET` ahead of the
    /// peer's queued messages; every receive call reads past it).
    ///
    /// # Errors
    /// [`Error::Closed`] at end of stream (a zero-length read), never before the messages
    /// still queued; [`Error::Truncated`] or [`Error::FdsTruncated`] for a message beyond this
    /// end's limits (discarded, descriptors closed).
    pub fn recv(&self) -> Result<Message, Error> {
        let mut bytes = Vec::new();
        let fds = self.recv_into(&mut bytes)?;
        if bytes.capacity() > 2 * bytes.len() + 256 {
            bytes.shrink_to_fit();
        }
        Ok(Message { bytes, fds })
    }

    /// Receives one message if one is queued, or fails with [`Error::is_would_block`].
    pub fn try_recv(&self) -> Result<Message, Error> {
        let mut bytes = Vec::new();
        let fds = self.try_recv_into(&mut bytes)?;
        bytes.shrink_to_fit();
        Ok(Message { bytes, fds })
    }

    /// Receives one message into `buf` (cleared first, grown to this end's byte limit as
    /// needed), returning its descriptors. Reusing `buf` avoids an allocation per message.
    pub fn recv_into(&self, buf: &mut Vec<u8>) -> Result<Vec<OwnedFd>, Error> {
        self.recv_with(buf, false)
    }

    /// The nonblocking form of [`recv_into`](Channel::recv_into).
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<Vec<OwnedFd>, Error> {
        self.recv_with(buf, true)
    }

    pub(crate) fn recv_with(
        &self,
        buf: &mut Vec<u8>,
        nonblocking: bool,
    ) -> Result<Vec<OwnedFd>, Error> {
        let limits = self.limits;
        let mut resets = 0;
        let got = loop {
            match sys::msg::recv(
                self.fd.as_fd(),
                buf,
                limits.max_bytes,
                limits.max_fds,
                nonblocking,
            ) {
                // Not end of stream: Linux reports a peer that closed with unread messages in
                // its own queue as ECONNRESET, once (reading it clears it), and *before* the
                // messages still queued for us, which are the peer's last words (a worker's
                // final acks). Read on; end of stream is only a zero-length read. The bound is
                // defensive: the kernel has one peer to report, so a second reset never comes.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset && resets < MAX_RESETS => {
                    resets += 1;
                }
                other => break other.map_err(|e| Error::io("recvmsg", e))?,
            }
        };
        // Checked before anything is returned, so a truncated message's descriptors are
        // dropped (closed) here. Its bytes go with the error: the receiver may still have to
        // answer it (a worker refuses a connection whose descriptor it could not receive).
        if got.fds_truncated && !got.bytes_truncated {
            return Err(Error::FdsTruncated { max: self.limits.max_fds, bytes: buf.clone() });
        }
        if got.bytes_truncated {
            return Err(Error::Truncated { max: self.limits.max_bytes });
        }
        if got.len == 0 && got.fds.is_empty() {
            return Err(Error::Closed);
        }
        Ok(got.fds)
    }
}

pub(crate) fn require_seqpacket(fd: BorrowedFd<'_>) -> io::Result<()> {
    if sys::socket::is_unix_seqpacket(fd)? {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidInput, "not an AF_UNIX SOCK_SEQPACKET socket"))
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(channel: Channel) -> OwnedFd {
        channel.fd
    }
}
