//! A real NATS server with JetStream for the cluster tests: Debian's
//! `nats-server`, started as a process on loopback with its store in a
//! temporary directory, and stopped when dropped. Never a mock.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server -js`; killed when dropped.
pub struct Nats {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats").field("port", &self.port).finish()
    }
}

fn program() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Whether `nats-server` is installed; with `CLAWCAGE_REQUIRE_CLUSTER` set
/// (CI), its absence fails the test instead of skipping it.
pub fn available() -> bool {
    let found = program().is_some();
    assert!(
        found || std::env::var_os("CLAWCAGE_REQUIRE_CLUSTER").is_none(),
        "the cluster tests need nats-server (Debian: apt-get install nats-server)"
    );
    if !found {
        eprintln!("skipped: nats-server is not installed");
    }
    found
}

impl Nats {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = Self {
            dir: tempfile::Builder::new()
                .prefix("clawcage-nats-")
                .tempdir()
                .unwrap(),
            port,
            child: None,
        };
        nats.spawn();
        nats
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(program().expect("nats-server is installed"))
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("nats-server did not start: {}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its store stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}
