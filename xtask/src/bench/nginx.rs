//! nginx as a peer: a generated configuration on 127.0.0.1 with the clusters' worker count
//! and body, run from a temporary directory (pid file, logs and temp paths inside it, so no
//! root-owned default path is touched), `daemon off; master_process on;`.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The configuration for `workers` worker processes listening on `addr`. The body is
/// `hello from worker 0 pid <pid>` (nginx has no worker number to print: every answer counts
/// for worker 0, so fairness is not measured); no access log (hello and evloop keep none);
/// keep-alive connections are never closed for their request count (nginx's default closes
/// them after 1,000 requests, which the other servers do not).
pub(crate) fn config(dir: &Path, addr: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        "daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000000;
    server {{
        listen {addr};
        default_type text/plain;
        location = / {{
            return 200 \"hello from worker 0 pid $pid\\n\";
        }}
    }}
}}
"
    )
}

/// A temporary directory holding one nginx run's configuration and files; removed on drop.
pub(crate) struct Instance {
    pub(crate) dir: PathBuf,
    pub(crate) addr: SocketAddr,
}

impl Instance {
    /// Writes the configuration for `workers` workers on a free loopback port (the port is
    /// found by binding port 0 and closing: another process could take it before nginx binds,
    /// which fails the run with nginx's own message).
    pub(crate) fn new(workers: usize) -> Result<Instance, String> {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("nginx: no free port on 127.0.0.1: {e}"))?;
        let dir = std::env::temp_dir().join(format!(
            "herd-bench-nginx-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let instance = Instance { dir, addr };
        let path = instance.config_path();
        std::fs::write(&path, config(&instance.dir, addr, workers))
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        Ok(instance)
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.join("nginx.conf")
    }

    /// `nginx`'s arguments: prefix and configuration in the directory, and the error log
    /// before the configuration is read (`-e`) too.
    pub(crate) fn args(&self) -> Vec<String> {
        let dir = format!("{}/", self.dir.display());
        let log = self.dir.join("error.log").display().to_string();
        let conf = self.config_path().display().to_string();
        vec!["-p".into(), dir, "-e".into(), log, "-c".into(), conf]
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_the_runs_settings_and_only_its_own_paths() {
        let dir = Path::new("/tmp/x");
        let text = config(dir, "127.0.0.1:4321".parse().unwrap(), 3);
        for needed in [
            "daemon off;",
            "master_process on;",
            "worker_processes 3;",
            "pid /tmp/x/nginx.pid;",
            "error_log /tmp/x/error.log warn;",
            "listen 127.0.0.1:4321;",
            "access_log off;",
            "return 200 \"hello from worker 0 pid $pid\\n\";",
        ] {
            assert!(text.contains(needed), "{needed:?} missing from:\n{text}");
        }
        // Every absolute path in it is under the directory (`location = /` is a URI).
        for word in text.split_whitespace().filter(|w| w.starts_with('/') && w.len() > 1) {
            assert!(word.starts_with("/tmp/x/"), "{word} outside the run's directory");
        }
        // Braces balance.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn an_instance_writes_and_removes_its_directory() {
        let instance = Instance::new(2).unwrap();
        let dir = instance.dir.clone();
        let text = std::fs::read_to_string(instance.config_path()).unwrap();
        assert!(text.contains(&format!("listen {};", instance.addr)));
        assert!(instance.args().contains(&instance.config_path().display().to_string()));
        drop(instance);
        assert!(!dir.exists());
    }
}
