//! Behaviour of one channel inside one process: round trips, limits, errors, end of stream.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use herd_ipc::{Channel, Error, Limits, MAX_FDS_PER_MESSAGE, MAX_MESSAGE_BYTES, WIRE_VERSION};

/// `count` pipes: the read ends to send, the write ends kept to prove the fds are the same pipes.
fn pipes(count: usize) -> Vec<(std::io::PipeReader, std::io::PipeWriter)> {
    (0..count).map(|_| std::io::pipe().expect("pipe")).collect()
}

/// Sends through each write end and reads the byte back through the received read end: the
/// received descriptors are the same open files, in order.
#[track_caller]
fn assert_same_pipes(
    sent: &mut [(std::io::PipeReader, std::io::PipeWriter)],
    received: Vec<OwnedFd>,
) {
    assert_eq!(received.len(), sent.len());
    for (i, ((_, writer), fd)) in sent.iter_mut().zip(received).enumerate() {
        writer.write_all(&[i as u8]).unwrap();
        let mut reader = std::io::PipeReader::from(fd);
        let mut byte = [0u8];
        reader.read_exact(&mut byte).unwrap();
        assert_eq!(byte[0], i as u8, "descriptor {i} arrived out of order");
    }
}

#[test]
fn raw_round_trip_with_0_1_and_max_fds() {
    let (a, b) = Channel::pair().unwrap();
    for count in [0, 1, MAX_FDS_PER_MESSAGE] {
        let mut sent = pipes(count);
        let fds: Vec<BorrowedFd<'_>> = sent.iter().map(|(r, _)| r.as_fd()).collect();
        let payload = format!("message with {count} fds").into_bytes();
        a.send(&payload, &fds).unwrap();
        let msg = b.recv().unwrap();
        assert_eq!(msg.bytes, payload);
        assert_same_pipes(&mut sent, msg.fds);
    }
}

#[test]
fn typed_round_trip_with_0_1_and_max_fds() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    enum Msg {
        Hello { id: u32, name: String },
        Unit,
    }
    let (a, b) = Channel::pair().unwrap();
    for count in [0, 1, MAX_FDS_PER_MESSAGE] {
        let mut sent = pipes(count);
        let fds: Vec<BorrowedFd<'_>> = sent.iter().map(|(r, _)| r.as_fd()).collect();
        let value = Msg::Hello { id: count as u32, name: "w".repeat(count) };
        b.send_value(&value, &fds).unwrap();
        let (got, received): (Msg, _) = a.recv_value().unwrap();
        assert_eq!(got, value);
        assert_same_pipes(&mut sent, received);
    }
    // A value that postcard encodes as zero bytes still travels: the version byte carries it.
    a.send_value(&(), &[]).unwrap();
    let ((), fds) = b.recv_value::<()>().unwrap();
    assert!(fds.is_empty());
    a.send_value(&Msg::Unit, &[]).unwrap();
    assert_eq!(b.recv_value::<Msg>().unwrap().0, Msg::Unit);
}

#[test]
fn messages_keep_their_boundaries_and_order() {
    let (a, b) = Channel::pair().unwrap();
    for i in 0..100u32 {
        a.send(&i.to_le_bytes()[..(i as usize % 4) + 1], &[]).unwrap();
    }
    for i in 0..100u32 {
        assert_eq!(b.recv().unwrap().bytes, &i.to_le_bytes()[..(i as usize % 4) + 1]);
    }
}

#[test]
fn largest_message_passes_and_one_more_byte_is_refused() {
    let (a, b) = Channel::pair().unwrap();
    let big = vec![7u8; MAX_MESSAGE_BYTES];
    a.send(&big, &[]).unwrap();
    assert_eq!(b.recv().unwrap().bytes, big);
    let err = a.send(&vec![0u8; MAX_MESSAGE_BYTES + 1], &[]).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { len, max } if len == MAX_MESSAGE_BYTES + 1 && max == MAX_MESSAGE_BYTES),
        "{err}"
    );
}

#[test]
fn send_refuses_empty_messages_and_too_many_fds() {
    let (a, _b) = Channel::pair().unwrap();
    assert!(matches!(a.send(b"", &[]), Err(Error::Empty)));
    let sent = pipes(MAX_FDS_PER_MESSAGE + 1);
    let fds: Vec<BorrowedFd<'_>> = sent.iter().map(|(r, _)| r.as_fd()).collect();
    let err = a.send(b"x", &fds).unwrap_err();
    assert!(
        matches!(err, Error::TooManyFds { count, max } if count == MAX_FDS_PER_MESSAGE + 1 && max == MAX_FDS_PER_MESSAGE)
    );
    assert!(err.to_string().contains("65 descriptors exceed the limit of 64"), "{err}");
}

#[test]
fn try_recv_on_an_empty_channel_would_block() {
    let (a, b) = Channel::pair().unwrap();
    let err = b.try_recv().unwrap_err();
    assert!(err.is_would_block(), "{err}");
    assert!(b.try_recv_value::<u32>().unwrap_err().is_would_block());
    a.try_send(b"now", &[]).unwrap();
    assert_eq!(b.try_recv().unwrap().bytes, b"now");
}

#[test]
fn try_send_to_a_full_channel_would_block_and_loses_nothing() {
    let (a, b) = Channel::pair().unwrap();
    let chunk = vec![1u8; 4096];
    let mut sent = 0u32;
    let err = loop {
        match a.try_send(&chunk, &[]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the channel never filled up");
    };
    assert!(err.is_would_block(), "{err}");
    let mut received = 0u32;
    while b.try_recv().is_ok() {
        received += 1;
    }
    assert_eq!(received, sent);
}

#[test]
fn peer_drop_is_end_of_stream_on_both_sides() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"last words", &[]).unwrap();
    drop(a);
    // What was queued before the close is still delivered, then end of stream, every time.
    assert_eq!(b.recv().unwrap().bytes, b"last words");
    assert!(matches!(b.recv(), Err(Error::Closed)));
    assert!(matches!(b.try_recv(), Err(Error::Closed)));
    assert!(matches!(b.send(b"anyone?", &[]), Err(Error::Closed)));
}

/// Linux reports `ECONNRESET` once, *before* the messages still queued, when the peer closes
/// with unread messages in its own queue. That report is not end of stream: the queued
/// messages (a worker's last acks) come first, then [`Error::Closed`].
#[test]
fn a_reset_peer_still_delivers_its_queued_messages_then_end_of_stream() {
    for nonblocking in [false, true] {
        let (p, w) = Channel::pair().unwrap();
        // `w` closes with a message it never read: the kernel flags `p` with ECONNRESET.
        p.send(b"B", &[]).unwrap();
        w.send(b"ack A", &[]).unwrap();
        drop(w);
        let recv = |c: &Channel| if nonblocking { c.try_recv() } else { c.recv() };
        match recv(&p) {
            Ok(m) => assert_eq!(m.bytes, b"ack A", "nonblocking {nonblocking}"),
            Err(e) => panic!("nonblocking {nonblocking}: the queued ack was lost: {e}"),
        }
        for _ in 0..2 {
            let err = recv(&p).unwrap_err();
            assert!(matches!(err, Error::Closed), "nonblocking {nonblocking}: {err}");
        }
    }
}

/// The same through the typed calls, whose receive path is shared with the raw one.
#[test]
fn a_reset_peer_still_delivers_its_queued_values() {
    for nonblocking in [false, true] {
        let (p, w) = Channel::pair().unwrap();
        p.send_value(&"B", &[]).unwrap();
        w.send_value(&7u32, &[]).unwrap();
        drop(w);
        let got = if nonblocking { p.try_recv_value::<u32>() } else { p.recv_value::<u32>() };
        assert_eq!(got.map(|(v, _)| v).ok(), Some(7), "nonblocking {nonblocking}");
        let err = if nonblocking { p.try_recv_value::<u32>() } else { p.recv_value::<u32>() };
        assert!(matches!(err, Err(Error::Closed)), "nonblocking {nonblocking}");
    }
}

#[test]
fn a_message_beyond_the_receivers_byte_limit_is_an_error() {
    let (a, mut b) = Channel::pair().unwrap();
    b.set_limits(Limits { max_bytes: 16, max_fds: 4 });
    a.send(&[9u8; 17], &[]).unwrap();
    let err = b.recv().unwrap_err();
    assert!(matches!(err, Error::Truncated { max: 16 }), "{err}");
    // The channel goes on: the next message is whole.
    a.send(&[1u8; 16], &[]).unwrap();
    assert_eq!(b.recv().unwrap().bytes, [1u8; 16]);
}

#[test]
fn malformed_typed_messages_are_errors_not_panics() {
    let (a, b) = Channel::pair().unwrap();
    // A bool must be 0 or 1.
    a.send(&[WIRE_VERSION, 2], &[]).unwrap();
    assert!(matches!(b.recv_value::<bool>(), Err(Error::Decode(_))));
    // A string that claims more bytes than there are.
    a.send(&[WIRE_VERSION, 200, b'a'], &[]).unwrap();
    assert!(matches!(b.recv_value::<String>(), Err(Error::Decode(_))));
    // Bytes left over.
    a.send(&[WIRE_VERSION, 1, 0, 0], &[]).unwrap();
    assert!(matches!(b.recv_value::<bool>(), Err(Error::TrailingBytes { count: 2 })));
    // Another build's wire version.
    a.send(&[WIRE_VERSION + 1, 1], &[]).unwrap();
    let err = b.recv_value::<bool>().unwrap_err();
    assert!(
        matches!(err, Error::WireVersion { found, expected } if found == WIRE_VERSION + 1 && expected == WIRE_VERSION)
    );
    // Every byte pattern of length 0..3 decodes or fails cleanly as an enum with data.
    for len in 1..=3usize {
        for n in 0..(1u32 << (8 * (len - 1))) {
            let mut frame = vec![WIRE_VERSION];
            frame.extend_from_slice(&n.to_le_bytes()[..len - 1]);
            if frame.len() == 1 {
                frame.push(0);
            }
            a.send(&frame, &[]).unwrap();
            let _ = b.recv_value::<Result<Option<(u8, String)>, u16>>();
        }
    }
}

#[test]
fn a_channel_is_driven_by_a_poller() {
    use polling::{Event, Events, Poller};
    use std::time::Duration;

    let (a, b) = Channel::pair().unwrap();
    let poller = Poller::new().unwrap();
    // SAFETY: `b` outlives its registration: it is deleted from the poller before `b` drops.
    unsafe { poller.add(&b, Event::readable(7)).unwrap() };
    let mut events = Events::new();

    // Nothing queued: the wait times out with no event.
    poller.wait(&mut events, Some(Duration::from_millis(50))).unwrap();
    assert!(events.is_empty());

    let writer = std::thread::spawn(move || {
        a.send_value(&"ping", &[]).unwrap();
        a
    });
    events.clear();
    poller.wait(&mut events, Some(Duration::from_secs(10))).unwrap();
    let event = events.iter().next().expect("readable within 10 s");
    assert_eq!(event.key, 7);
    assert!(event.readable);
    let (text, _) = b.try_recv_value::<String>().unwrap();
    assert_eq!(text, "ping");
    assert!(b.try_recv().unwrap_err().is_would_block());

    // End of stream also wakes the poller.
    drop(writer.join().unwrap());
    poller.modify(&b, Event::readable(7)).unwrap();
    events.clear();
    poller.wait(&mut events, Some(Duration::from_secs(10))).unwrap();
    assert_eq!(events.len(), 1);
    assert!(matches!(b.try_recv(), Err(Error::Closed)));
    poller.delete(&b).unwrap();
}

#[test]
fn from_fd_accepts_only_seqpacket_sockets() {
    let (a, b) = Channel::pair().unwrap();
    let a = Channel::from_fd(OwnedFd::from(a)).unwrap();
    a.send(b"still works", &[]).unwrap();
    assert_eq!(b.recv().unwrap().bytes, b"still works");

    let (reader, _writer) = std::io::pipe().unwrap();
    let err = Channel::from_fd(OwnedFd::from(reader)).unwrap_err();
    assert!(err.to_string().contains("channel from fd"), "{err}");
}

#[test]
fn from_env_explains_what_is_wrong() {
    // The variable names are unique to this test, so no other test races on them.
    let err = Channel::from_env("HERD_TEST_UNSET_VARIABLE").unwrap_err();
    assert!(err.to_string().starts_with("HERD_TEST_UNSET_VARIABLE: "), "{err}");
}

#[test]
fn shutdown_write_delivers_what_was_sent_then_end_of_stream() {
    let (a, b) = Channel::pair().unwrap();
    a.send(b"before", &[]).unwrap();
    a.shutdown_write().unwrap();
    assert_eq!(b.recv().unwrap().bytes, b"before");
    assert!(matches!(b.recv(), Err(Error::Closed)));
    // The half-closed end still receives.
    b.send(b"reply", &[]).unwrap();
    assert_eq!(a.recv().unwrap().bytes, b"reply");
    assert!(matches!(a.send(b"more", &[]), Err(Error::Closed)));
}

/// A message whose descriptors could not be received (`MSG_CTRUNC`: more than this end takes,
/// or the descriptor table full) is an error that keeps the message's bytes, so the receiver
/// can still answer it; what arrived of the descriptors is closed.
#[test]
fn a_message_that_lost_its_descriptors_can_still_be_read() {
    let (a, mut b) = Channel::pair().unwrap();
    b.set_limits(herd_ipc::Limits { max_bytes: 1024, max_fds: 0 });
    let (_reader, writer) = std::io::pipe().unwrap();
    a.send_value(&(7u64, "new connection"), &[writer.as_fd()]).unwrap();
    let error = b.recv_value::<(u64, String)>().unwrap_err();
    assert!(matches!(error, herd_ipc::Error::FdsTruncated { .. }), "{error}");
    assert_eq!(error.truncated_value::<(u64, String)>(), Some((7, "new connection".to_owned())));
    assert_eq!(error.truncated_value::<bool>(), None, "not a bool");
    // The channel goes on.
    a.send_value(&1u8, &[]).unwrap();
    assert_eq!(b.recv_value::<u8>().unwrap().0, 1);
}

/// Several messages, each with its own descriptor, go in one `sendmmsg` and come back in one
/// `recvmmsg`, in order and with their boundaries; end of stream comes last, after every
/// message.
#[test]
fn batches_keep_order_boundaries_and_descriptors_and_end_of_stream_comes_last() {
    let (a, b) = Channel::pair().unwrap();
    let mut sent = pipes(3);
    let payloads: [&[u8]; 3] = [b"one", b"two!", b"three"];
    let fds: Vec<[BorrowedFd<'_>; 1]> = sent.iter().map(|(r, _)| [r.as_fd()]).collect();
    let messages: Vec<(&[u8], &[BorrowedFd<'_>])> =
        payloads.iter().zip(&fds).map(|(p, f)| (*p, &f[..])).collect();
    assert_eq!(a.try_send_batch(&messages).unwrap(), 3);
    drop(fds);
    a.try_send_batch(&[(b"four", &[])]).unwrap();
    drop(a);
    let mut scratch = Vec::new();
    let mut batch = b.try_recv_batch(8, &mut scratch).unwrap();
    assert_eq!(batch.len(), 4, "the four messages: {batch:?}");
    let mut received = Vec::new();
    for (i, entry) in batch.iter_mut().take(3).enumerate() {
        let message = entry.as_mut().unwrap();
        assert_eq!(message.bytes, payloads[i]);
        assert_eq!(message.fds.len(), 1);
        received.push(message.fds.pop().unwrap());
    }
    assert_same_pipes(&mut sent, received);
    let fourth = batch[3].as_ref().unwrap();
    assert_eq!((fourth.bytes.as_slice(), fourth.fds.len()), (&b"four"[..], 0));
    // End of stream comes after every message (the kernel ends a batch before it).
    let end = b.try_recv_batch(8, &mut scratch);
    assert!(matches!(end.as_deref(), Ok([Err(Error::Closed)]) | Err(Error::Closed)), "{end:?}");
}

/// A batch receive of an empty queue fails as a single one does; a batch send refuses a
/// message outside the limits at its place, sending the ones before it.
#[test]
fn an_empty_batch_would_block_and_a_bad_message_ends_a_batch_before_it() {
    let (a, b) = Channel::pair().unwrap();
    let mut scratch = Vec::new();
    assert!(b.try_recv_batch(8, &mut scratch).unwrap_err().is_would_block());
    assert_eq!(a.try_send_batch(&[(b"ok", &[]), (b"", &[]), (b"late", &[])]).unwrap(), 1);
    assert!(matches!(a.try_send_batch(&[(b"", &[])]), Err(Error::Empty)));
    let batch = b.try_recv_batch(8, &mut scratch).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].as_ref().unwrap().bytes, b"ok");
}
