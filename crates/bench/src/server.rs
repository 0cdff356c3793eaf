//! A `certkeeper serve` for the benchmarks that drive the real binary: started on free
//! loopback ports, its admin token read from the banner, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped on drop: SIGTERM first (nginx stops its workers on it), SIGKILL
/// after two seconds.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A running server.
pub struct Server {
    /// The process.
    pub process: Killed,
    /// `https://127.0.0.1:port` of the API.
    pub https: String,
    /// `https://127.0.0.1:port` of the agent listener.
    pub agents_url: String,
    /// The admin token printed at first start.
    pub token: String,
    /// The root certificate (PEM) to trust for the API.
    pub root: PathBuf,
}

/// Starts `certkeeper serve` with its data in `dir/data` and `extra` arguments.
pub fn start_server(binary: &Path, dir: &Path, extra: &[&str]) -> Result<Server, String> {
    let data = dir.join("data");
    let ports = [free_port()?, free_port()?, free_port()?];
    let mut child = Command::new(binary)
        .args(["serve", "--data-dir"])
        .arg(&data)
        .args(extra)
        .args(["--listen", &format!("127.0.0.1:{}", ports[0])])
        .args(["--http-listen", &format!("127.0.0.1:{}", ports[1])])
        .args(["--agents-listen", &format!("127.0.0.1:{}", ports[2])])
        .env("CERTKEEPER_LOG", "warn")
        .env_remove("CERTKEEPER_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("start certkeeper serve: {e}"))?;
    let mut reader = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let token = loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return Err("certkeeper serve exited".into());
        }
        if let Some(rest) = line.trim().strip_prefix("Admin token:") {
            break rest.trim().to_string();
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Ok(Server {
        process: Killed(child),
        https: format!("https://127.0.0.1:{}", ports[0]),
        agents_url: format!("https://127.0.0.1:{}", ports[2]),
        token,
        root: data.join("ca/root.crt"),
    })
}
