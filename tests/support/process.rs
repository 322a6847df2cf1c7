//! Real worker processes, for crash and shutdown tests.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `target/<profile>/<name>`, built by `cargo test --workspace` (the worker package has its own
/// integration test, which makes cargo build its binary).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run the suite with `cargo test --workspace`",
        path.display()
    );
    path
}

/// A Switchyard binary running as its own process, its log in a temporary file.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

/// Kept for readability at call sites: most crash tests spawn workers.
pub type WorkerProcess = Process;

impl Process {
    /// `switchyard-worker` with this environment.
    pub fn spawn(env: &[(String, String)]) -> Process {
        Process::spawn_binary("switchyard-worker", env)
    }

    pub fn spawn_binary(name: &str, env: &[(String, String)]) -> Process {
        let log =
            std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary(name))
            .env_clear()
            .envs(env.iter().cloned())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Process { child, log }
    }

    /// `switchyard-api` with this environment on a port of its own choosing (no bind-and-release
    /// race with tests running in parallel); returns it and its base URL once it listens.
    pub async fn spawn_api(env: &[(String, String)]) -> (Process, String) {
        let mut env = env.to_vec();
        env.retain(|(k, _)| k != "SWITCHYARD_LISTEN");
        env.push(("SWITCHYARD_LISTEN".into(), "127.0.0.1:0".into()));
        let mut api = Process::spawn_binary("switchyard-api", &env);
        let base = api.wait_for_listen().await;
        (api, base)
    }

    /// Reads the address the API reports in its `listening` log line.
    async fn wait_for_listen(&mut self) -> String {
        let start = Instant::now();
        loop {
            for line in self.log_text().lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if let Some(addr) = v["fields"]["listen"].as_str() {
                    return format!("http://{addr}");
                }
            }
            assert!(self.is_running(), "the API exited:\n{}", self.log_text());
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the API did not listen within 30 s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGSTOP: the process freezes (as a VM pause or a GC stall would), holding its leases.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{name}");
    }

    /// SIGKILL: no cleanup of any kind.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for the exit; returns the exit status. Async, so that servers on
    /// the test's runtime (the partner) keep answering meanwhile.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "worker did not exit within {timeout:?}; its log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
