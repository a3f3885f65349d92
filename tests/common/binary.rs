//! The real `tickwire` binary as a child process: started with its
//! arguments and environment, its address read from the line it prints,
//! its output drained so that it never blocks on a full pipe, killed when
//! dropped (a failing test leaves nothing running), and stopped with
//! SIGTERM and a deadline. Every wait here has a deadline.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a started server may take to print its address.
const START_LIMIT: Duration = Duration::from_secs(30);
/// How long a process may take to exit after SIGTERM.
pub const STOP_LIMIT: Duration = Duration::from_secs(10);

/// `tickwire` with the given arguments (nothing else set).
pub fn tickwire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tickwire"))
}

/// The child is killed when the thread that starts it (the test's) ends,
/// even if the test process is killed before its destructors run.
pub fn dies_with_test(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec; prctl is
    // async-signal-safe and only sets a flag of the child.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// Runs a command that must end by itself within `limit`, collecting its
/// output (stdin is empty, as with [`Command::output`]).
pub fn run_within(limit: Duration, cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = match wait_within(&mut child, limit) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {limit:?}");
        }
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `tickwire record --feed FEED --speed max --out LOG`, which must
/// succeed within 120 s: a log as the publisher writes it.
pub fn record_max(feed: impl AsRef<std::ffi::OsStr>, log: impl AsRef<std::ffi::OsStr>) {
    let out = run_within(
        Duration::from_secs(120),
        tickwire()
            .args(["record", "--feed"])
            .arg(feed)
            .args(["--speed", "max", "--out"])
            .arg(log)
            .env("RUST_LOG", "warn"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// [`run_within`] 20 s.
pub fn run(cmd: &mut Command) -> Output {
    run_within(Duration::from_secs(20), cmd)
}

/// The exit status, or None if it is still running after `limit`.
fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The address in a server's `http://ADDR/` or `https://ADDR/` line.
fn served_address(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line
        .split_once("http://")
        .or_else(|| line.split_once("https://"))?;
    rest.split('/').next()?.parse().ok()
}

/// A running `tickwire` process, killed when dropped. Its stdout and
/// stderr (where the log goes) are collected as they are written.
pub struct Binary {
    child: Child,
    /// Names it in the log printed when a test fails.
    label: String,
    addr: Option<SocketAddr>,
    /// The stdout line that gave the address.
    banner: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    drains: Vec<JoinHandle<()>>,
}

impl Binary {
    /// `tickwire serve --listen 127.0.0.1:0` with `args`, once it has
    /// printed its `http://ADDR/` line.
    pub fn serve(args: &[&str]) -> Binary {
        Binary::serve_with(
            tickwire()
                .args(["serve", "--listen", "127.0.0.1:0"])
                .args(args),
        )
    }

    /// `tickwire serve` on port 0 with a small synthetic feed (3 symbols,
    /// 100 updates a second) and `args` and `env`, logging at info with no
    /// colour (for tests that read its log).
    pub fn serve_synthetic(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Binary::serve_with(
            tickwire()
                .args(["serve", "--listen", "127.0.0.1:0", "--feed"])
                .arg("synthetic:symbols=3,rate=100")
                .args(args)
                .envs(env.iter().copied())
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1"),
        )
    }

    /// Starts `cmd` (a server) and waits for the `http://ADDR/` (or
    /// `https://ADDR/`) line it prints on stdout.
    pub fn serve_with(cmd: &mut Command) -> Binary {
        let (tx, rx) = mpsc::channel();
        let mut bin = Binary::spawn(cmd, Some(tx));
        match rx.recv_timeout(START_LIMIT) {
            Ok((addr, banner)) => {
                bin.addr = Some(addr);
                bin.banner = banner;
            }
            Err(e) => panic!(
                "{cmd:?}: no address printed ({e}); stdout:\n{}\nstderr:\n{}",
                bin.stdout(),
                bin.log()
            ),
        }
        bin
    }

    /// Starts `cmd` (a process that serves nothing, such as `record`).
    pub fn start(cmd: &mut Command) -> Binary {
        Binary::spawn(cmd, None)
    }

    fn spawn(cmd: &mut Command, address: Option<mpsc::Sender<(SocketAddr, String)>>) -> Binary {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let drain = |pipe: Box<dyn Read + Send>,
                     sink: &Arc<Mutex<String>>,
                     mut address: Option<mpsc::Sender<(SocketAddr, String)>>| {
            let sink = Arc::clone(sink);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(tx) = &address {
                        if let Some(addr) = served_address(&line) {
                            let _ = tx.send((addr, line));
                            address = None;
                            continue;
                        }
                    }
                    let mut text = sink.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        let drains = vec![
            drain(Box::new(child.stdout.take().unwrap()), &stdout, address),
            drain(Box::new(child.stderr.take().unwrap()), &stderr, None),
        ];
        Binary {
            label: format!("tickwire {}", child.id()),
            child,
            addr: None,
            banner: String::new(),
            stdout,
            stderr,
            drains,
        }
    }

    /// Names it in the log printed when a test fails (several at once).
    pub fn labelled(mut self, label: &str) -> Binary {
        self.label = label.to_owned();
        self
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("a process started with Binary::serve")
    }

    /// The line it printed its address on.
    pub fn banner(&self) -> &str {
        &self.banner
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its stderr (the log) so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Its stdout so far, less the address line.
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// The log so far, once it has a line containing `needle` or `limit`
    /// has passed (the log is read from a pipe, a moment behind).
    pub async fn log_with(&self, needle: &str, limit: Duration) -> String {
        super::within(limit, || self.log().contains(needle)).await;
        self.log()
    }

    /// The first `n` log lines containing `needle`, waiting up to `limit`.
    pub fn wait_for_lines(&self, needle: &str, n: usize, limit: Duration) -> Vec<String> {
        let found = || -> Vec<String> {
            self.log()
                .lines()
                .filter(|l| l.contains(needle))
                .map(str::to_owned)
                .collect()
        };
        let seen = super::eventually_blocking(limit, || found().len() >= n);
        assert!(seen, "{n} lines with {needle:?}: {:?}", found());
        found()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` (SIGHUP, SIGTERM, ...).
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid we spawned and a valid signal number.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0);
    }

    /// Waits (at most `limit`) for it to exit, asserts that it succeeded,
    /// and waits for the rest of its output.
    pub fn wait_success(&mut self, limit: Duration) {
        let status = wait_within(&mut self.child, limit)
            .unwrap_or_else(|| panic!("did not exit within {limit:?}"));
        assert!(status.success(), "{status}; log:\n{}", self.log());
        let drained =
            super::eventually_blocking(limit, || self.drains.iter().all(JoinHandle::is_finished));
        assert!(drained, "its output did not end within {limit:?}");
    }

    /// SIGTERM, then waits (at most [`STOP_LIMIT`]) for a successful exit.
    pub fn stop(&mut self) {
        self.terminate();
        self.wait_success(STOP_LIMIT);
    }

    /// SIGKILL: a crash, not a clean shutdown.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // Already gone after `stop`; then both fail harmlessly.
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "[{}] stdout:\n{}\n[{}] stderr:\n{}",
                self.label,
                self.stdout(),
                self.label,
                self.log()
            );
        }
    }
}
