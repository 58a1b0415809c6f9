//! No descriptor leaks, and every descriptor close-on-exec. One test in this binary, so that no
//! other test opens or closes descriptors while it counts them.

use std::os::fd::{AsFd, BorrowedFd};

use herd_ipc::{Channel, Error, Limits};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd").count()
}

#[test]
fn no_descriptor_leaks_and_all_close_on_exec() {
    let (a, mut b) = Channel::pair().unwrap();
    assert!(herd_ipc::is_cloexec(a.as_fd()).unwrap());
    assert!(herd_ipc::is_cloexec(b.as_fd()).unwrap());
    let (reader, writer) = std::io::pipe().unwrap();
    let baseline = open_fds();

    // 10,000 messages, each with two descriptors, alternating raw and typed.
    for i in 0..10_000u32 {
        let fds = [reader.as_fd(), writer.as_fd()];
        let received = if i % 2 == 0 {
            a.send(&i.to_le_bytes(), &fds).unwrap();
            b.recv().unwrap().fds
        } else {
            a.send_value(&i, &fds).unwrap();
            let (n, fds) = b.recv_value::<u32>().unwrap();
            assert_eq!(n, i);
            fds
        };
        assert_eq!(received.len(), 2);
        for fd in &received {
            assert!(herd_ipc::is_cloexec(fd.as_fd()).unwrap(), "received fd without FD_CLOEXEC");
        }
    }
    assert_eq!(open_fds(), baseline, "descriptors leaked over 10,000 messages");

    // Truncation: the receiver accepts 2 descriptors, the sender sends 8. The message is an
    // error and the 2 that arrived are closed (the kernel closes the other 6).
    b.set_limits(Limits { max_bytes: 1024, max_fds: 2 });
    let eight: Vec<BorrowedFd<'_>> = (0..8).map(|_| reader.as_fd()).collect();
    a.send(b"too many", &eight).unwrap();
    let err = b.recv().unwrap_err();
    assert!(matches!(&err, Error::FdsTruncated { max: 2, bytes } if bytes == b"too many"), "{err}");
    assert_eq!(open_fds(), baseline, "a truncated message leaked its descriptors");

    // Byte truncation and a malformed typed message close their descriptors too.
    b.set_limits(Limits { max_bytes: 4, max_fds: 8 });
    a.send(b"longer than four", &[reader.as_fd()]).unwrap();
    assert!(matches!(b.recv(), Err(Error::Truncated { max: 4 })));
    a.send(&[herd_ipc::WIRE_VERSION, 5], &[reader.as_fd(), writer.as_fd()]).unwrap();
    assert!(matches!(b.recv_value::<bool>(), Err(Error::Decode(_))));
    assert_eq!(open_fds(), baseline, "an error path leaked descriptors");

    // Descriptors still in flight when the receiver closes are released by the kernel.
    a.send(b"never read", &[reader.as_fd()]).unwrap();
    drop(b);
    drop(a);
    assert_eq!(open_fds(), baseline - 2);
}
