//! Node's path shortening at work: a socket path too long for `sun_path` binds once made
//! relative to the current directory.
//!
//! The only test of its own binary, because it changes the process's current directory.

mod util;

use std::io;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use herd_handle::{BindOptions, Spec, bind};
use util::{TempDir, accept, listen_with};

#[test]
fn long_paths_bind_through_the_current_directory() {
    let dir = TempDir::new("long-path");
    let before = std::env::current_dir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    // What getcwd says, which is what the bind compares with.
    let cwd = std::env::current_dir().unwrap();
    let result = std::panic::catch_unwind(|| {
        let deep = cwd.join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        std::env::set_current_dir(&deep).unwrap();
        let path = deep.join("app.sock");
        assert!(path.as_os_str().len() > 108, "{} is short enough anyway", path.display());
        let spec = Spec::Unix(path.clone());

        // Without shortening the path does not fit.
        let plain = BindOptions { shorten_path: false, ..Default::default() };
        let error = bind(&spec, &plain).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(error.address(), spec.to_string());

        // With it, the bind uses `app.sock` and the listener still reports the full path.
        let listener = listen_with(&spec, &BindOptions::default());
        assert_eq!(listener.local_addr().unwrap(), spec);
        let _client = UnixStream::connect("app.sock").unwrap();
        accept(&listener);

        // A relative spec is reported resolved against the current directory.
        let relative = Spec::Unix(PathBuf::from("rel.sock"));
        let listener = listen_with(&relative, &BindOptions::default());
        assert_eq!(listener.local_addr().unwrap(), Spec::Unix(deep.join("rel.sock")));
        assert!(deep.join("rel.sock").exists());
    });
    std::env::set_current_dir(before).unwrap();
    drop(dir);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
