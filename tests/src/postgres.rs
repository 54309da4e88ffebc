//! A real PostgreSQL server for the cluster tests: Debian's `postgresql`
//! package (15), started as a process on loopback in a temporary directory
//! and stopped when dropped. Never a mock.
//!
//! PostgreSQL refuses to run as root; when the tests run as root (CI
//! containers), the server runs as the `postgres` user the Debian package
//! creates, through `runuser`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server's programs.
const BIN_DIRS: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"];

/// A running PostgreSQL server; stopped (fast shutdown) when dropped.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    as_postgres: bool,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("port", &self.port)
            .finish()
    }
}

/// The server's programs, if installed.
fn bin_dir() -> Option<PathBuf> {
    BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("postgres").is_file())
}

/// Whether a PostgreSQL server can be started here; with
/// `CLAWCAGE_REQUIRE_CLUSTER` set (CI), its absence fails the test instead
/// of skipping it.
pub fn available() -> bool {
    let found = bin_dir().is_some();
    assert!(
        found || std::env::var_os("CLAWCAGE_REQUIRE_CLUSTER").is_none(),
        "the cluster tests need PostgreSQL 15 (Debian: apt-get install postgresql)"
    );
    if !found {
        eprintln!("skipped: PostgreSQL is not installed");
    }
    found
}

/// Whether the tests run as root: `/proc/self` belongs to the process's
/// effective user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A free port on loopback (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// Initialises a cluster in a temporary directory and starts it on a
    /// free loopback port, with a database `clawcage` owned by user
    /// `clawcage` (password `clawcage`). Blocks until it accepts
    /// connections.
    pub fn start() -> Self {
        let bin = bin_dir().expect("PostgreSQL is installed (check `available()` first)");
        let dir = tempfile::Builder::new()
            .prefix("clawcage-pg-")
            .tempdir()
            .unwrap();
        let as_postgres = is_root();
        if as_postgres {
            // The server's user owns its directory.
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown the data directory to postgres");
        }
        let mut pg = Self {
            dir,
            bin,
            port: free_port(),
            child: None,
            as_postgres,
        };
        let data = pg.data_dir();
        let password_file = pg.dir.path().join("pwfile");
        std::fs::write(&password_file, "clawcage\n").unwrap();
        if as_postgres {
            Command::new("chown")
                .arg("postgres:postgres")
                .arg(&password_file)
                .status()
                .unwrap();
        }
        let output = pg
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "clawcage", "--auth=scram-sha-256", "-E", "UTF8"])
            .arg(format!("--pwfile={}", password_file.display()))
            .args(["--no-instructions", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        pg.spawn();
        pg.wait_ready();
        let output = pg
            .command("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "clawcage",
            ])
            .arg("clawcage")
            .env("PGPASSWORD", "clawcage")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "createdb: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        pg
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command running one of the server's programs, as the server's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-p", &self.port.to_string()])
            // No Unix socket: loopback TCP only, and nothing in /var/run.
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = self
                .command("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not start: {}", self.log());
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The connection URL of the `clawcage` database.
    pub fn url(&self) -> String {
        format!(
            "postgres://clawcage:clawcage@127.0.0.1:{}/clawcage",
            self.port
        )
    }

    /// Stops the server (a fast shutdown: sessions are ended), as an
    /// operator's `systemctl stop` would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self
                .command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "fast", "-w", "stop"])
                .output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready();
    }

    /// The data directory (for checks on what is stored).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
