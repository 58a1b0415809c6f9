//! The error type: its message, accessors, and conversion to `io::Error`.

use std::io;

use herd_handle::{Error, Spec};

#[test]
fn an_errno_from_another_process_prints_like_a_local_error() {
    let spec: Spec = "tcp://127.0.0.1:80".parse().unwrap();
    let error = Error::new("listen", &spec, io::Error::from_raw_os_error(libc::EADDRINUSE));
    let os = io::Error::from_raw_os_error(libc::EADDRINUSE);
    assert_eq!(error.to_string(), format!("listen tcp://127.0.0.1:80: {os}"));
    assert_eq!(error.op(), "listen");
    assert_eq!(error.address(), "tcp://127.0.0.1:80");
    assert_eq!(error.raw_os_error(), Some(libc::EADDRINUSE));
    assert_eq!(error.kind(), io::ErrorKind::AddrInUse);
    assert_eq!(error.io_error().raw_os_error(), Some(libc::EADDRINUSE));
}

#[test]
fn conversion_to_io_error_keeps_kind_message_and_errno() {
    let error =
        Error::new("bind", "unix:///run/app.sock", io::Error::from_raw_os_error(libc::EACCES));
    let message = error.to_string();
    assert!(message.starts_with("bind unix:///run/app.sock: "), "{message}");
    let io_error = io::Error::from(error);
    assert_eq!(io_error.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(io_error.to_string(), message);
    // The io::Error's own errno is gone (it wraps a custom error): downcast to reach it.
    assert_eq!(io_error.raw_os_error(), None);
    let inner = io_error.get_ref().and_then(|e| e.downcast_ref::<Error>()).unwrap();
    assert_eq!(inner.raw_os_error(), Some(libc::EACCES));
}

#[test]
fn errors_without_an_errno() {
    let error = Error::new(
        "inherit",
        "fd://3",
        io::Error::new(io::ErrorKind::InvalidInput, "not a socket"),
    );
    assert_eq!(error.to_string(), "inherit fd://3: not a socket");
    assert_eq!(error.raw_os_error(), None);
}
