//! Classifying an accept's errno.

use std::io;

/// `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: see [`crate::is_resource_exhaustion`].
pub(crate) fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
