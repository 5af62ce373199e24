//! Port mapping against a real gateway: miniupnpd (UPnP IGD, NAT-PMP and
//! PCP) in a namespace of its own, between a "home" namespace where
//! ccfd-bt seeds on the default bind address and an "internet" namespace
//! where a second ccfd-bt downloads through the port the seed mapped. The
//! three namespaces belong to the test and are linked only by veth pairs to
//! each other: nothing reaches the host's network. (miniupnpd refuses a
//! private WAN address, so the "internet" side is 11.0.0.0/24, which exists
//! only inside these namespaces.) Skipped, with a message, where namespaces
//! or miniupnpd are missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netns::Netns;
use common::{payload, test_dir, wait_until, Proc, BIN};

const WAN_IP: &str = "11.0.0.1";
const PORT: &str = "16881";

/// The three namespaces and miniupnpd between them.
struct Gateway {
    home: Netns,
    _router: Netns,
    internet: Netns,
    _miniupnpd: Proc,
    leases: PathBuf,
}

impl Gateway {
    /// Builds home —veth— router —veth— internet and starts miniupnpd on
    /// the router with UPnP or NAT-PMP/PCP (the other one off).
    fn start(dir: &Path, tag: &str, upnp: bool) -> Option<Gateway> {
        if !Path::new("/usr/sbin/miniupnpd").exists() {
            eprintln!("SKIPPED: miniupnpd is not installed (scripts/setup.sh installs miniupnpd-nftables)");
            return None;
        }
        let id = std::process::id();
        let (home, router, internet) = match (
            Netns::create(&format!("ccfd-home-{tag}{id}")),
            Netns::create(&format!("ccfd-gw-{tag}{id}")),
            Netns::create(&format!("ccfd-inet-{tag}{id}")),
        ) {
            (Some(h), Some(r), Some(i)) => (h, r, i),
            _ => {
                eprintln!("SKIPPED: cannot create network namespaces here (needs root and iproute2)");
                return None;
            }
        };
        let (lan_home, lan_router, wan_router, wan_internet) =
            (format!("{tag}h{id}"), format!("{tag}l{id}"), format!("{tag}w{id}"), format!("{tag}i{id}"));
        let ip = |args: &[&str]| Command::new("ip").args(args).output().is_ok_and(|o| o.status.success());
        let linked =
            ip(&["link", "add", &lan_home, "netns", &home.name, "type", "veth", "peer", "name", &lan_router, "netns", &router.name])
                && ip(&[
                    "link",
                    "add",
                    &wan_router,
                    "netns",
                    &router.name,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &wan_internet,
                    "netns",
                    &internet.name,
                ])
                && home.run("ip", &["addr", "add", "192.168.77.2/24", "dev", &lan_home])
                && home.run("ip", &["link", "set", &lan_home, "up"])
                && home.run("ip", &["route", "add", "default", "via", "192.168.77.1"])
                && router.run("ip", &["addr", "add", "192.168.77.1/24", "dev", &lan_router])
                && router.run("ip", &["link", "set", &lan_router, "up"])
                && router.run("ip", &["addr", "add", "11.0.0.1/24", "dev", &wan_router])
                && router.run("ip", &["link", "set", &wan_router, "up"])
                && router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
                && internet.run("ip", &["addr", "add", "11.0.0.2/24", "dev", &wan_internet])
                && internet.run("ip", &["link", "set", &wan_internet, "up"]);
        assert!(linked, "could not wire the namespaces");
        // miniupnpd 2.3.1 adds rules to these chains but never creates them.
        let ruleset = dir.join("router.nft");
        std::fs::write(
            &ruleset,
            "table inet filter {\n\
             chain miniupnpd { }\n\
             chain prerouting_miniupnpd { }\n\
             chain postrouting_miniupnpd { }\n\
             chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }\n\
             chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }\n\
             chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }\n\
             }\n",
        )
        .unwrap();
        if !router.run("nft", &["-f", ruleset.to_str().unwrap()]) {
            eprintln!("SKIPPED: nftables is not available (scripts/setup.sh installs it)");
            return None;
        }
        let leases = dir.join("upnp.leases");
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        let conf = dir.join("miniupnpd.conf");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname={wan_router}\nlistening_ip={lan_router}\nhttp_port=0\nenable_upnp={}\nenable_natpmp={}\n\
                 secure_mode=yes\nsystem_uptime=yes\nuuid=3d3cec3a-8cf0-11e0-98ee-001a6b3c1d7c\nlease_file={}\n\
                 allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                yes_no(upnp),
                yes_no(!upnp),
                leases.display()
            ),
        )
        .unwrap();
        let mut cmd = router.command("/usr/sbin/miniupnpd");
        cmd.arg("-f").arg(&conf).arg("-d").arg("-P").arg(dir.join("miniupnpd.pid"));
        let miniupnpd = Proc::spawn("miniupnpd", &mut cmd, &dir.join("miniupnpd.log"));
        let log = miniupnpd.log.clone();
        wait_until("miniupnpd listening", Duration::from_secs(10), || {
            std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Listening for NAT-PMP") || t.contains("HTTP listening"))
        });
        Some(Gateway { home, _router: router, internet, _miniupnpd: miniupnpd, leases })
    }

    /// The router's lease file: one line per mapping it holds,
    /// `PROTOCOL:EXTERNAL_PORT:CLIENT:PORT:EXPIRY:DESCRIPTION`.
    fn leases(&self) -> String {
        std::fs::read_to_string(&self.leases).unwrap_or_default()
    }
}

/// A seed behind the router maps its port, a peer on the internet side
/// downloads from it through the mapping, and the mapping is gone once the
/// seed has stopped.
fn seed_reachable_through_the_router(tag: &str, upnp: bool, method: &str) {
    let dir = test_dir();
    let d = dir.path();
    let Some(gateway) = Gateway::start(d, tag, upnp) else { return };
    let data = payload(1_000_000, 91);
    std::fs::create_dir_all(d.join("seed")).unwrap();
    std::fs::write(d.join("seed/f.bin"), &data).unwrap();
    let torrent = d.join("f.torrent");
    let created = Command::new(BIN).arg("create").arg(d.join("seed/f.bin")).arg("-o").arg(&torrent).output();
    assert!(created.unwrap().status.success());

    // The default bind address, as a user at home runs it; port mapping is on by default.
    let mut seed_cmd = gateway.home.command(BIN);
    seed_cmd.arg("seed").arg(&torrent).arg("--data").arg(d.join("seed")).args(["--port", PORT, "--no-dht"]);
    seed_cmd.env("RUST_LOG", "ccfd_bt=debug");
    let mut seed = Proc::spawn("seed", &mut seed_cmd, &d.join("seed.log"));
    let mapped = |protocol: &str| gateway.leases().contains(&format!("{protocol}:{PORT}:192.168.77.2:{PORT}:"));
    wait_until("the seed's TCP and UDP mappings", Duration::from_secs(30), || mapped("TCP") && mapped("UDP"));
    let seed_log = || std::fs::read_to_string(&seed.log).unwrap_or_default();
    wait_until("the external address learned", Duration::from_secs(10), || seed_log().contains(&format!("external={WAN_IP}")));
    assert!(seed_log().contains(method), "mapped, but not by {method}: {}", seed.log_text());

    let mut dl_cmd = gateway.internet.command(BIN);
    dl_cmd.arg("download").arg(&torrent).arg("-o").arg(d.join("dl"));
    dl_cmd.args(["--bind", "11.0.0.2", "--port", "0", "--peer", &format!("{WAN_IP}:{PORT}"), "--no-dht", "--no-port-mapping"]);
    let mut dl = Proc::spawn("download", &mut dl_cmd, &d.join("dl.log"));
    let status = dl.wait(Duration::from_secs(60));
    assert!(status.success(), "the download through the mapped port failed: {}", dl.log_text());
    assert!(std::fs::read(d.join("dl/f.bin")).unwrap() == data, "the file differs");

    seed.signal(libc::SIGINT);
    let status = seed.wait(Duration::from_secs(20));
    assert!(status.success(), "the seed did not stop cleanly: {}", seed.log_text());
    assert!(!mapped("TCP") && !mapped("UDP"), "the mappings outlived the seed: {}", gateway.leases());
}

#[test]
fn upnp_maps_the_port_and_removes_it_on_exit() {
    seed_reachable_through_the_router("u", true, "ports mapped by UPnP");
}

#[test]
fn nat_pmp_maps_the_port_and_removes_it_on_exit() {
    seed_reachable_through_the_router("n", false, "ports mapped by NAT-PMP/PCP");
}
