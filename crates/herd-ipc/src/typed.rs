//! Typed messages: a serde value encoded with postcard, behind one wire-version byte.
//!
//! The version byte has two jobs: a typed message is never empty (postcard encodes `()` as no
//! bytes at all), and two builds of a program that disagree on the protocol fail loudly instead
//! of misreading each other, which matters when a rolling restart brings in a new binary.

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Channel, Error};

/// The first byte of every typed message. Bump it when a protocol built on this crate changes
/// its message types incompatibly.
pub const WIRE_VERSION: u8 = 1;

thread_local! {
    /// Reused encode and decode buffers: a typed round trip allocates nothing for the bytes.
    static SEND_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static RECV_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Channel {
    /// Encodes `value` and sends it with `fds`, blocking while the peer's queue is full.
    pub fn send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), Error> {
        self.send_value_with(value, fds, false)
    }

    /// The nonblocking form of [`send_value`](Channel::send_value).
    pub fn try_send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), Error> {
        self.send_value_with(value, fds, true)
    }

    fn send_value_with<T: Serialize + ?Sized>(
        &self,
        value: &T,
        fds: &[BorrowedFd<'_>],
        nonblocking: bool,
    ) -> Result<(), Error> {
        SEND_BUF.with_borrow_mut(|buf| {
            buf.clear();
            buf.push(WIRE_VERSION);
            // to_extend takes the buffer by value; it is put back for the next message.
            let bytes = postcard::to_extend(value, std::mem::take(buf)).map_err(Error::Encode)?;
            let sent = self.send_with(&bytes, fds, nonblocking);
            *buf = bytes;
            sent
        })
    }

    /// Encodes each value and sends them with their descriptors in one system call, as
    /// [`try_send_batch`](Channel::try_send_batch): how many were sent, at least one.
    ///
    /// # Errors
    /// [`Error::Encode`], or [`try_send_batch`](Channel::try_send_batch)'s.
    pub fn try_send_values<T: Serialize>(
        &self,
        messages: &[(T, &[BorrowedFd<'_>])],
    ) -> Result<usize, Error> {
        SEND_BUF.with_borrow_mut(|buf| {
            buf.clear();
            let mut ends = Vec::with_capacity(messages.len());
            for (value, _) in messages {
                buf.push(WIRE_VERSION);
                *buf = postcard::to_extend(value, std::mem::take(buf)).map_err(Error::Encode)?;
                ends.push(buf.len());
            }
            let mut start = 0;
            let frames: Vec<(&[u8], &[BorrowedFd<'_>])> = ends
                .iter()
                .zip(messages)
                .map(|(&end, (_, fds))| {
                    let frame = &buf[start..end];
                    start = end;
                    (frame, *fds)
                })
                .collect();
            self.try_send_batch(&frames)
        })
    }

    /// Receives up to `max` queued messages in one system call, as
    /// [`try_recv_batch`](Channel::try_recv_batch), each decoded as `T` (a message that is
    /// not a `T` is its entry's error, its descriptors closed).
    ///
    /// # Errors
    /// [`try_recv_batch`](Channel::try_recv_batch)'s.
    #[expect(clippy::type_complexity, reason = "one result per message inside the call's own")]
    pub fn try_recv_values<T: DeserializeOwned>(
        &self,
        max: usize,
        scratch: &mut Vec<u8>,
    ) -> Result<Vec<Result<(T, Vec<OwnedFd>), Error>>, Error> {
        let batch = self.try_recv_batch(max, scratch)?;
        Ok(batch
            .into_iter()
            .map(|m| m.and_then(|m| decode(&m.bytes).map(|value| (value, m.fds))))
            .collect())
    }

    /// Receives one message and decodes it as `T`, blocking until one arrives.
    ///
    /// # Errors
    /// Besides [`recv`](Channel::recv)'s errors: [`Error::Decode`], [`Error::TrailingBytes`] or
    /// [`Error::WireVersion`] when the bytes are not a `T`. The message's descriptors are closed.
    pub fn recv_value<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), Error> {
        self.recv_value_with(false)
    }

    /// The nonblocking form of [`recv_value`](Channel::recv_value).
    pub fn try_recv_value<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), Error> {
        self.recv_value_with(true)
    }

    fn recv_value_with<T: DeserializeOwned>(
        &self,
        nonblocking: bool,
    ) -> Result<(T, Vec<OwnedFd>), Error> {
        RECV_BUF.with_borrow_mut(|buf| {
            let fds = self.recv_with(buf, nonblocking)?;
            decode(buf).map(|value| (value, fds))
        })
    }
}

/// Decodes one typed frame. Public through [`Channel::recv_value`] only; separate so that it can
/// be tested on arbitrary bytes.
pub(crate) fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, Error> {
    let Some((&version, body)) = frame.split_first() else {
        return Err(Error::Decode(postcard::Error::DeserializeUnexpectedEnd));
    };
    if version != WIRE_VERSION {
        return Err(Error::WireVersion { found: version, expected: WIRE_VERSION });
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(Error::Decode)?;
    if !rest.is_empty() {
        return Err(Error::TrailingBytes { count: rest.len() });
    }
    Ok(value)
}
