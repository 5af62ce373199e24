//! Test harness: real programs as child processes (killed on drop, by pid),
//! opentracker with a whitelist, payloads, and the ccfd-bt binary.
#![allow(dead_code)]

pub mod inproc;
pub mod netns;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ccfd-bt");

/// Log filter for ccfd-bt children: `CCFD_TEST_LOG=debug` when chasing a failure.
pub fn log_filter() -> String {
    format!("ccfd_bt={}", std::env::var("CCFD_TEST_LOG").unwrap_or_else(|_| "info".into()))
}

/// A temporary folder for one test; `CCFD_TEST_KEEP=1` keeps it (its path goes to stderr).
pub fn test_dir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new().prefix("ccfd-test-").tempdir().expect("temp dir");
    if std::env::var_os("CCFD_TEST_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    dir
}

/// A /24 of loopback addresses of our own, so tests in parallel never collide.
pub struct Net {
    prefix: String,
}

static NEXT_NET: AtomicU8 = AtomicU8::new(1);

impl Net {
    /// `file_base` separates test binaries (they may run at once under nextest).
    pub fn new(file_base: u8) -> Net {
        let n = NEXT_NET.fetch_add(1, Ordering::SeqCst);
        Net { prefix: format!("127.{file_base}.{n}") }
    }

    pub fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    pub fn addr(&self, host: u8, port: u16) -> String {
        format!("{}.{host}:{port}", self.prefix)
    }
}

/// A child process that is killed (by its pid) when dropped.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let out = std::fs::File::create(log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e} (did scripts/setup.sh run?)"));
        Proc { name: name.into(), child, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for exit up to `timeout`; panics with the log on timeout.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!("{} did not finish in {timeout:?}; log:\n{}", self.name, self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        let tail: Vec<&str> = s.lines().rev().take(60).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Sends a signal to this child only.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a TCP port accepts connections.
pub fn wait_port(addr: &str, timeout: Duration) {
    let addr: SocketAddr = addr.parse().expect("addr");
    let deadline = Instant::now() + timeout;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Deterministic pseudo-random payload (SplitMix64), so failures reproduce.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Makes a .torrent with `ccfd-bt create`; returns its info-hash hex.
pub fn create_torrent(content: &Path, torrent: &Path, trackers: &[String], piece_length: u64) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("create").arg(content).arg("-o").arg(torrent).arg("--piece-length").arg(piece_length.to_string());
    for t in trackers {
        cmd.arg("--tracker").arg(t);
    }
    let out = cmd.output().expect("run ccfd-bt create");
    assert!(out.status.success(), "create failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta = ccfd_proto::metainfo::Metainfo::from_file(torrent).expect("read torrent back");
    meta.info_hash.to_hex()
}

/// opentracker on `ip:port` (HTTP and UDP), whitelisting `hashes`.
pub fn opentracker(dir: &Path, ip: &str, port: u16, hashes: &[String]) -> Proc {
    let root = dir.join("opentracker");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("whitelist"), hashes.join("\n") + "\n").unwrap();
    let proc = Proc::spawn(
        "opentracker",
        Command::new("opentracker")
            .args(["-i", ip, "-p", &port.to_string(), "-P", &port.to_string(), "-d"])
            .arg(&root)
            .args(["-w", "whitelist"]),
        &dir.join("opentracker.log"),
    );
    wait_port(&format!("{ip}:{port}"), Duration::from_secs(10));
    proc
}

/// `args`, and `--no-dht` for a command that runs a client unless the
/// test asks for the DHT itself: a test's clients must never look up the
/// public DHT routers (all test traffic stays on loopback); and
/// `--no-port-mapping`, so none searches for a router either.
pub fn local_only<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut out = args.to_vec();
    // Every command but these runs a client (the streaming command has no name).
    let runs_client = !matches!(args.first(), Some(&"create" | &"tracker" | &"world" | &"demo") | None);
    if runs_client && !args.iter().any(|a| *a == "--dht-bootstrap" || *a == "--no-dht") {
        out.push("--no-dht");
    }
    if runs_client {
        out.push("--no-port-mapping");
    }
    out
}

/// A ccfd-bt child process with `args`, logging to `dir/name.log`.
pub fn ccfd(dir: &Path, name: &str, args: &[&str]) -> Proc {
    let mut cmd = Command::new(BIN);
    cmd.args(local_only(args)).env("RUST_LOG", log_filter());
    Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")))
}

/// Runs `ccfd-bt download ... --json` to completion; returns the summary.
pub fn ccfd_download(dir: &Path, name: &str, args: &[&str], timeout: Duration) -> serde_json::Value {
    let out_path = dir.join(format!("{name}.json"));
    let stdout = std::fs::File::create(&out_path).unwrap();
    let log = dir.join(format!("{name}.log"));
    let mut cmd = Command::new(BIN);
    let mut full = vec!["download"];
    full.extend_from_slice(args);
    cmd.args(local_only(&full)).arg("--json").env("RUST_LOG", log_filter());
    let child =
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("spawn ccfd-bt download");
    let mut proc = Proc { name: name.into(), child, log };
    let status = proc.wait(timeout);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(status.success(), "{name} exited {status}; log:\n{}", proc.log_text());
    let line = text.lines().next().unwrap_or_else(|| panic!("{name} printed nothing on stdout"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{name} printed {line:?}: {e}"))
}

/// A ccfd-bt process whose stdout goes to `dir/name.json`, for `--json --seed-after` runs.
pub fn ccfd_json(dir: &Path, name: &str, args: &[&str]) -> (Proc, PathBuf) {
    let out_path = dir.join(format!("{name}.json"));
    let log = dir.join(format!("{name}.log"));
    let child = Command::new(BIN)
        .args(local_only(args))
        .env("RUST_LOG", log_filter())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn ccfd-bt");
    (Proc { name: name.into(), child, log }, out_path)
}

/// Waits for the first JSON line a `ccfd_json` process prints.
pub fn wait_json(proc: &mut Proc, out: &Path, timeout: Duration) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
            return serde_json::from_str(line).unwrap_or_else(|e| panic!("{} printed {line:?}: {e}", proc.name));
        }
        if let Some(status) = proc.exited() {
            panic!("{} exited {status} without a summary; log:\n{}", proc.name, proc.log_text());
        }
        assert!(Instant::now() < deadline, "{} gave no summary in {timeout:?}; log:\n{}", proc.name, proc.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A python3-libtorrent peer (scripts/lt_peer.py). `listen` is `IP:PORT`
/// (`[::1]:PORT` for IPv6); `peers` are dialed, and flags among them
/// (`--utp-only`, `--encrypted`, `--stay`, `--upload-kbps N`) go to the script.
pub fn libtorrent(dir: &Path, name: &str, mode: &str, torrent: &Path, save: &Path, listen: &str, peers: &[String]) -> Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lt_peer.py");
    let (ip, port) = listen.rsplit_once(':').expect("IP:PORT");
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg(script).arg(mode).arg(torrent).arg(save).arg(ip.trim_matches(['[', ']'])).arg(port).args(peers);
    Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")))
}

/// aria2c seeding (`seed`) or downloading once (`download`).
pub fn aria2(dir: &Path, name: &str, mode: &str, torrent: &Path, save: &Path, ip: &str, port: u16) -> Proc {
    let mut cmd = Command::new("aria2c");
    cmd.args([
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--file-allocation=none",
        "--seed-ratio=0.0",
        "--summary-interval=0",
        "--console-log-level=warn",
        "--bt-tracker-connect-timeout=5",
    ])
    .arg(format!("--listen-port={port}"))
    .arg(format!("--interface={ip}"))
    .arg(format!("--dir={}", save.display()));
    if mode == "seed" {
        cmd.arg("--check-integrity=true");
    } else {
        cmd.arg("--seed-time=0");
    }
    cmd.arg(torrent);
    Proc::spawn(name, &mut cmd, &dir.join(format!("{name}.log")))
}

/// A transmission-daemon on `ip:peer_port`, RPC on `ip:rpc_port`, configured
/// as ../shared/REAL-PEERS.md says makes it usable on loopback.
pub struct Transmission {
    pub proc: Proc,
    rpc: String,
}

impl Transmission {
    pub fn start(dir: &Path, name: &str, ip: &str, peer_port: u16, rpc_port: u16, download_dir: &Path) -> Transmission {
        let conf = dir.join(format!("{name}-conf"));
        std::fs::create_dir_all(&conf).unwrap();
        let settings = serde_json::json!({
            "bind-address-ipv4": ip,
            "peer-port": peer_port,
            "peer-port-random-on-start": false,
            "rpc-enabled": true,
            "rpc-bind-address": ip,
            "rpc-port": rpc_port,
            "rpc-authentication-required": false,
            "rpc-whitelist-enabled": false,
            "rpc-host-whitelist-enabled": false,
            "dht-enabled": false,
            "lpd-enabled": false,
            "pex-enabled": false,
            "utp-enabled": false,
            "port-forwarding-enabled": false,
            "encryption": 0,
            "rename-partial-files": false,
            "start-added-torrents": true,
            "download-dir": download_dir,
            "incomplete-dir-enabled": false,
            "speed-limit-up-enabled": false,
            "speed-limit-down-enabled": false,
            "ratio-limit-enabled": false,
            "message-level": 2,
        });
        std::fs::write(conf.join("settings.json"), serde_json::to_vec_pretty(&settings).unwrap()).unwrap();
        let proc = Proc::spawn(name, Command::new("transmission-daemon").arg("-f").arg("-g").arg(&conf), &dir.join(format!("{name}.log")));
        let rpc = format!("{ip}:{rpc_port}");
        wait_port(&rpc, Duration::from_secs(15));
        Transmission { proc, rpc }
    }

    fn remote(&self, args: &[&str]) -> String {
        let out = Command::new("transmission-remote").arg(&self.rpc).args(args).output().expect("transmission-remote");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    pub fn add(&self, torrent: &Path) {
        let out = self.remote(&["-a", &torrent.display().to_string()]);
        assert!(out.contains("success"), "transmission-remote -a: {out}");
    }

    /// Percent done of the first torrent, as transmission reports it.
    pub fn percent_done(&self) -> Option<f64> {
        let info = self.remote(&["-t", "1", "-i"]);
        let line = info.lines().find(|l| l.trim_start().starts_with("Percent Done:"))?;
        line.split(':').nth(1)?.trim().trim_end_matches('%').parse().ok()
    }

    pub fn wait_percent(&self, want: f64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.percent_done().is_some_and(|p| p >= want) {
                return;
            }
            assert!(Instant::now() < deadline, "transmission stuck at {:?}%; log:\n{}", self.percent_done(), self.proc.log_text());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Seeders a tracker reports for `hash_hex`, by HTTP scrape (0 on any error).
pub fn scrape_seeders(tracker: &str, hash_hex: &str) -> u32 {
    use std::io::Write;
    let hash = ccfd_proto::metainfo::InfoHash::from_hex(hash_hex).expect("hex");
    let escaped: String = hash.0.iter().map(|b| format!("%{b:02X}")).collect();
    let Ok(mut s) = TcpStream::connect(tracker) else { return 0 };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(s, "GET /scrape?info_hash={escaped} HTTP/1.0\r\nHost: {tracker}\r\n\r\n");
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    let Some(body_at) = reply.windows(4).position(|w| w == b"\r\n\r\n") else { return 0 };
    ccfd_tracker::http::parse_scrape(&reply[body_at + 4..], hash).map_or(0, |st| st.seeders)
}

/// Waits until `f` holds, polling; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts two files are byte-for-byte equal.
pub fn assert_same_file(a: &Path, b: &Path) {
    let x = std::fs::read(a).unwrap_or_else(|e| panic!("{}: {e}", a.display()));
    let y = std::fs::read(b).unwrap_or_else(|e| panic!("{}: {e}", b.display()));
    assert_eq!(x.len(), y.len(), "{} and {} differ in length", a.display(), b.display());
    assert!(x == y, "{} and {} differ", a.display(), b.display());
}

/// One HTTP/1.1 Range request; returns the status line and the body.
pub fn get_range(addr: &str, path: &str, first: u64, last: u64) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nRange: bytes={first}-{last}\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let mut chunk = [0u8; 65536];
    let want = (last - first + 1) as usize;
    loop {
        let n = s.read(&mut chunk).expect("read");
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(i) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            if reply.len() - (i + 4) >= want {
                break;
            }
        }
    }
    let i = reply.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&reply[..i]).into_owned();
    (head.lines().next().unwrap_or_default().to_string(), reply[i + 4..].to_vec())
}

/// nginx in the foreground with one `server { ... }` block (`server` is
/// its inside), its files under `dir`; returns once `addr` accepts.
pub fn nginx(dir: &Path, addr: &str, server: &str) -> Proc {
    let scratch = dir.join("nginx-tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; pid {pid}; error_log {err}; events {{}}\n\
             http {{ access_log off; server {{ {server} }} \
             client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; }}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("nginx.err").display(),
            tmp = scratch.display(),
        ),
    )
    .unwrap();
    let proc = Proc::spawn("nginx", Command::new("/usr/sbin/nginx").arg("-c").arg(&conf).arg("-p").arg(dir), &dir.join("nginx.log"));
    wait_port(addr, Duration::from_secs(20));
    proc
}
