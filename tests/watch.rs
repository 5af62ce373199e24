//! Watching a stream: the demo's dashboard in a real terminal (tmux), and
//! mpv playing the demo movie from `--serve` while it downloads, with a
//! seek (a Range read far ahead) served with the right bytes.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{ccfd, get_range, test_dir, wait_port, wait_until, Proc, BIN};

const MOVIE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/torrents/ccfd-demo.mp4");

/// Whether `program` is on the PATH; says the test is skipped when not.
fn installed(program: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED: {program} is not installed (scripts/setup.sh installs it)");
    }
    found
}

/// A tmux server on its own socket, killed (with everything in it) on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").arg("-L").arg(&self.socket).args(args).env("TERM", "xterm-256color").output().expect("tmux");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "demo"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The share "NN% present" in the dashboard's header, if shown.
fn present_percent(screen: &str) -> Option<u32> {
    let at = screen.find("% present")?;
    let digits: String = screen[..at].chars().rev().take_while(|c| c.is_ascii_digit()).collect();
    digits.chars().rev().collect::<String>().parse().ok()
}

#[test]
fn the_demo_dashboard_runs_in_a_terminal_and_q_restores_it() {
    if !installed("tmux") {
        return;
    }
    let dir = test_dir();
    let tmux = Tmux { socket: format!("ccfd-test-{}", std::process::id()) };
    let world = dir.path().join("world");
    // The dashboard's log file goes to TMPDIR: keep it in the test's folder.
    let cmd = format!(
        "TMPDIR={} {BIN} demo --warmup 1 --rate 100 --upload 100 --dir {}; echo CCFD-EXIT=$?; sleep 120",
        dir.path().display(),
        world.display()
    );
    tmux.run(&["new-session", "-d", "-s", "demo", "-x", "140", "-y", "45", &cmd]);

    let mut screen = String::new();
    wait_until("the dashboard with progress", Duration::from_secs(60), || {
        screen = tmux.screen();
        screen.contains("penalties") && present_percent(&screen).is_some_and(|p| p > 0)
    });
    for panel in ["B(t) against what has arrived", "VoD server", "continuity", "pieces (46)", "peers (", "log", "ccfd-demo.mp4"] {
        assert!(screen.contains(panel), "no {panel:?} on the dashboard:\n{screen}");
    }
    assert_eq!(tmux.run(&["display", "-p", "-t", "demo", "#{alternate_on}"]).trim(), "1", "the dashboard uses the alternate screen");

    tmux.run(&["send-keys", "-t", "demo", "?"]);
    wait_until("the help", Duration::from_secs(5), || tmux.screen().contains("quit (the terminal is restored)"));
    tmux.run(&["send-keys", "-t", "demo", "q"]);
    wait_until("ccfd-bt to exit", Duration::from_secs(20), || tmux.screen().contains("CCFD-EXIT="));
    let after = tmux.screen();
    assert!(after.contains("CCFD-EXIT=130"), "quitting early exits 130:\n{after}");
    assert!(after.contains("stopped before the end"), "{after}");
    assert!(!after.contains("penalties"), "the dashboard is gone:\n{after}");
    assert_eq!(tmux.run(&["display", "-p", "-t", "demo", "#{alternate_on}"]).trim(), "0", "the terminal is back on the main screen");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn mpv_plays_the_demo_while_it_downloads_and_a_seek_is_served() {
    if !installed("mpv") {
        return;
    }
    let dir = test_dir();
    let movie = std::fs::read(MOVIE).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let world = dir.path().join("world");
    let args =
        ["demo", "--no-tui", "--warmup", "1", "--rate", "100", "--upload", "100", "--serve", &addr, "--dir", world.to_str().unwrap()];
    let mut demo = ccfd(dir.path(), "demo", &args);
    wait_port(&addr, Duration::from_secs(30));
    let url = format!("http://{addr}/ccfd-demo.mp4");

    // A seek: 2 MB in, long before those bytes can have arrived by playback order.
    let began = Instant::now();
    let (status, body) = get_range(&addr, "/ccfd-demo.mp4", 2_000_000, 2_099_999);
    assert!(status.contains("206"), "{status}");
    assert!(body == movie[2_000_000..2_100_000], "the seek read returned other bytes");
    assert!(demo.log_text().contains("seek: deadlines re-planned"), "the read did not count as a seek:\n{}", demo.log_text());
    assert!(!demo.log_text().contains("complete:"), "the seek read waited for the whole download");
    eprintln!("seek read served after {:.1} s", began.elapsed().as_secs_f64());

    // mpv plays the movie from the start while the rest downloads.
    let mut mpv_cmd = Command::new("mpv");
    mpv_cmd.args(["--no-config", "--vo=null", "--no-audio", "--untimed", "--really-quiet", &url]);
    let mut mpv = Proc::spawn("mpv", &mut mpv_cmd, &dir.path().join("mpv.log"));
    let played = mpv.wait(Duration::from_secs(120));
    assert!(played.success(), "mpv exited {played}:\n{}", mpv.log_text());

    // The download completed with the right bytes (the world compares them) and
    // keeps serving until told to stop.
    wait_until("the stream report", Duration::from_secs(60), || demo.log_text().contains("still serving"));
    demo.signal(libc::SIGINT);
    let status = demo.wait(Duration::from_secs(20));
    assert!(matches!(status.code(), Some(0 | 3)), "demo exited {status}:\n{}", demo.log_text());
}
