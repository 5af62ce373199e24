//! The emulator on a real kernel path: a private network namespace whose
//! loopback queues every packet to ccfd-wanem. UDP datagrams between two
//! loopback addresses must arrive after the configured delay, in order,
//! with the configured share lost, and a burst must leave at the link's rate
//! with what overflows the queue dropped. Skipped, with a message, where
//! namespaces or iptables are not available (scripts/setup.sh installs it).

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ccfd-wanem");

struct EmulatedNetns {
    name: String,
    emulator: Option<Child>,
}

impl EmulatedNetns {
    fn create(tag: &str, links: &[&str]) -> Option<EmulatedNetns> {
        let name = format!("ccfd-wanem-{tag}-{}", std::process::id());
        let ok = |args: &[&str]| Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
        if !ok(&["netns", "add", &name]) {
            eprintln!("SKIPPED: cannot create a network namespace here (needs root and iproute2)");
            return None;
        }
        let mut ns = EmulatedNetns { name, emulator: None };
        let queued = ok(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "mtu", "1500", "up"])
            && ok(&["netns", "exec", &ns.name, "iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lo", "-j", "NFQUEUE"]);
        if !queued {
            eprintln!("SKIPPED: iptables with NFQUEUE is not available (scripts/setup.sh installs iptables)");
            return None;
        }
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name, BIN]);
        for link in links {
            cmd.args(["--link", link]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("ccfd-wanem starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        ns.emulator = Some(child);
        assert_eq!(line.trim(), "ready", "the emulator did not bind its queue");
        Some(ns)
    }

    /// Moves the calling thread into the namespace (sockets made after this live there).
    fn enter(&self) {
        let file = std::fs::File::open(format!("/run/netns/{}", self.name)).unwrap();
        // SAFETY: setns on a valid namespace descriptor; it changes only this thread's network namespace.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for EmulatedNetns {
    fn drop(&mut self) {
        if let Some(mut child) = self.emulator.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A sender on 127.0.0.2 and a receiver on 127.0.0.3 (in the namespace
/// the calling thread entered) that gives up 300 ms after the last datagram.
fn socket_pair() -> (UdpSocket, UdpSocket) {
    let a = UdpSocket::bind("127.0.0.2:0").unwrap();
    let b = UdpSocket::bind("127.0.0.3:0").unwrap();
    b.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    (a, b)
}

fn stamp(seq: u32, epoch: Instant) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&seq.to_be_bytes());
    b[4..12].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    b
}

#[test]
fn datagrams_arrive_late_by_the_delay_in_order_with_the_loss_share() {
    let Some(ns) = EmulatedNetns::create("delay", &["from=127.0.0.2,to=127.0.0.3,delay=20ms,jitter=3ms,loss=2%"]) else {
        return;
    };
    // This test's own thread; the namespace goes with it.
    std::thread::spawn(move || {
        ns.enter();
        let (a, b) = socket_pair();
        let epoch = Instant::now();
        let sent = 3000u32;
        let sender = {
            let a = a.try_clone().unwrap();
            let to = b.local_addr().unwrap();
            std::thread::spawn(move || {
                for seq in 0..sent {
                    a.send_to(&stamp(seq, epoch), to).unwrap();
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let (mut got, mut last, mut delays) = (0u32, None, Vec::new());
        let mut buf = [0u8; 64];
        while let Ok(n) = b.recv(&mut buf) {
            assert_eq!(n, 16);
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
            let sent_ns = u64::from_be_bytes(buf[4..12].try_into().unwrap());
            assert!(last.is_none_or(|l| seq > l), "datagram {seq} overtook {last:?}");
            last = Some(seq);
            got += 1;
            delays.push(epoch.elapsed().as_nanos() as u64 - sent_ns);
        }
        sender.join().unwrap();
        let lost = f64::from(sent - got) / f64::from(sent);
        assert!((0.01..0.035).contains(&lost), "lost {lost:.4} of the datagrams at 2%");
        delays.sort_unstable();
        let ms = |ns: u64| ns as f64 / 1e6;
        let (least, median) = (ms(delays[0]), ms(delays[delays.len() / 2]));
        // 20 ms +- 3 ms of jitter; none may come early, and a held one
        // holds those behind it (no reordering), so the median is a little over 20.
        assert!(least >= 17.0, "a datagram came after {least:.2} ms");
        assert!((19.0..24.0).contains(&median), "median delay {median:.2} ms");
        eprintln!("{got} of {sent} arrived; delay least {least:.2} ms, median {median:.2} ms");
    })
    .join()
    .unwrap();
}

#[test]
fn a_burst_leaves_at_the_link_rate_and_the_queue_drops_the_rest() {
    // 8 Mbit/s: a 1000-byte datagram (1028 on the wire) takes 1.028 ms;
    // the queue holds 20 of them.
    let Some(ns) = EmulatedNetns::create("rate", &["from=127.0.0.2,to=127.0.0.3,rate=8mbit,delay=5ms,queue=20560"]) else {
        return;
    };
    std::thread::spawn(move || {
        ns.enter();
        let (a, b) = socket_pair();
        let to = b.local_addr().unwrap();
        let payload = [7u8; 1000];
        for _ in 0..100 {
            a.send_to(&payload, to).unwrap();
        }
        let mut arrivals = Vec::new();
        let mut buf = [0u8; 2048];
        while b.recv(&mut buf).is_ok() {
            arrivals.push(Instant::now());
        }
        // Every datagram reached the emulator within a fraction of a
        // transmission time, so about the queue's worth passed.
        assert!((18..=23).contains(&arrivals.len()), "{} of 100 passed a 20-packet queue", arrivals.len());
        let spread = arrivals.last().unwrap().duration_since(arrivals[0]).as_secs_f64() * 1e3;
        let expected = (arrivals.len() - 1) as f64 * 1.028;
        assert!((spread - expected).abs() < 4.0, "{} datagrams spread over {spread:.1} ms, expected {expected:.1}", arrivals.len());
    })
    .join()
    .unwrap();
}
