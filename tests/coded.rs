//! Coded cooperation (ccfd) in-process: transfers through a seeded lossy
//! UDP shim, three receivers cooperating from one seed, a polluter, and a
//! swarm mixing coded and plain peers. Every file must come out exact.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ccfd_bt::ccfd::UdpShim;
use ccfd_bt::client::ClientConfig;
use ccfd_bt::swarm::TorrentConfig;
use ccfd_proto::metainfo::Metainfo;
use common::inproc::*;

const LEN: usize = 1_500_000;
const PIECE: u64 = 64 * 1024;

fn ip(b: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 52, b, host))
}

fn config(ip: IpAddr) -> ClientConfig {
    // Loopback is short and clean: coded on every path, or it would stay plain.
    ClientConfig { bind: ip, port: 0, coded_min_rtt: std::time::Duration::ZERO, ..ClientConfig::default() }
}

/// A seed holding all of `data`.
async fn seed(client: ClientConfig, meta: &Arc<Metainfo>, dir: &Path, data: &[u8]) -> Node {
    write_part(dir, "f.bin", data, 0..data.len());
    node_with(client, meta, dir, TorrentConfig::default(), Vec::new()).await
}

/// A leecher dialing `peers`, starting from an empty (zeroed) file.
async fn leecher(client: ClientConfig, meta: &Arc<Metainfo>, dir: &Path, peers: Vec<SocketAddr>) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("f.bin"), vec![0u8; meta.total_length as usize]).unwrap();
    node_with(client, meta, dir, TorrentConfig::default(), peers).await
}

async fn complete(nodes: &[&Node], limit: Duration) -> bool {
    eventually(limit, || nodes.iter().all(|n| n.torrent.is_complete())).await
}

fn assert_exact(dir: &Path, data: &[u8]) {
    let got = std::fs::read(dir.join("f.bin")).unwrap();
    assert!(got == data, "{} differs from the original", dir.display());
}

async fn lossy_transfer(b: u8, loss: f64) {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(LEN, u64::from(b));
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    let s = seed(config(ip(b, 1)), &meta, &tmp.path().join("seed"), &data).await;
    let shim = UdpShim { loss, delay: Duration::from_millis(2), seed: u64::from(b), cut_after: None };
    let client = ClientConfig { udp_shim: Some(shim), ..config(ip(b, 2)) };
    let l = leecher(client, &meta, &tmp.path().join("l"), vec![s.client.listen_addr()]).await;
    assert!(complete(&[&l], Duration::from_secs(60)).await, "no completion at {loss} loss: {:?}", l.torrent.snapshot());
    assert_exact(&tmp.path().join("l"), &data);
    let snap = l.torrent.snapshot();
    assert!(snap.coded_bytes as usize >= LEN * 9 / 10, "only {} of {LEN} bytes came coded at {loss} loss", snap.coded_bytes);
    assert_eq!(snap.piece_failures, 0);
    assert!(snap.peer_list.iter().all(|p| p.coded), "the link is coded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_transfer_without_loss() {
    lossy_transfer(1, 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_transfer_at_five_percent_loss() {
    lossy_transfer(2, 0.05).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_transfer_at_twenty_percent_loss() {
    lossy_transfer(3, 0.20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_cooperate_from_one_seed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(LEN, 4);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    // A seed slower than the receivers together: they must trade among themselves.
    let seed_client = ClientConfig { upload_rate: Some(400_000), ..config(ip(4, 1)) };
    let s = seed(seed_client, &meta, &tmp.path().join("seed"), &data).await;
    let seed_addr = s.client.listen_addr();
    let a = leecher(config(ip(4, 2)), &meta, &tmp.path().join("a"), vec![seed_addr]).await;
    let b = leecher(config(ip(4, 3)), &meta, &tmp.path().join("b"), vec![seed_addr, a.client.listen_addr()]).await;
    let c = leecher(config(ip(4, 4)), &meta, &tmp.path().join("c"), vec![seed_addr, a.client.listen_addr(), b.client.listen_addr()]).await;
    assert!(complete(&[&a, &b, &c], Duration::from_secs(60)).await);
    let mut from_neighbours = 0;
    for (n, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        assert_exact(&tmp.path().join(name), &data);
        let snap = n.torrent.snapshot();
        assert!(snap.coded_bytes > 0, "{name} got nothing coded");
        from_neighbours += snap.bytes_from.iter().filter(|(addr, _)| addr.ip() != seed_addr.ip()).map(|(_, b)| *b).sum::<u64>();
    }
    let uploaded = s.torrent.snapshot().uploaded;
    assert!(from_neighbours > 0, "the receivers helped each other");
    assert!(uploaded < 3 * LEN as u64, "the seed sent {uploaded} bytes: every receiver took all from it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polluter_is_banned_and_the_file_stays_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(LEN, 5);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    let honest = seed(config(ip(5, 1)), &meta, &tmp.path().join("honest"), &data).await;
    let polluter_client = ClientConfig { coded_polluter: true, ..config(ip(5, 9)) };
    let polluter = seed(polluter_client, &meta, &tmp.path().join("polluter"), &data).await;
    let peers = vec![polluter.client.listen_addr(), honest.client.listen_addr()];
    let l = leecher(config(ip(5, 2)), &meta, &tmp.path().join("l"), peers).await;
    assert!(complete(&[&l], Duration::from_secs(90)).await, "{:?}", l.torrent.snapshot());
    assert_exact(&tmp.path().join("l"), &data);
    let snap = l.torrent.snapshot();
    assert!(snap.banned.contains(&ip(5, 9)), "the polluter is banned: {:?}", snap.banned);
    assert!(!snap.banned.contains(&ip(5, 1)), "the honest seed is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coded_and_plain_peers_share_one_swarm() {
    let tmp = tempfile::tempdir().unwrap();
    init_log();
    let data = payload(LEN, 6);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    // A capped seed: both leechers take seconds, so each gets part from it.
    let s = seed(ClientConfig { upload_rate: Some(300_000), ..config(ip(6, 1)) }, &meta, &tmp.path().join("seed"), &data).await;
    let plain =
        leecher(ClientConfig { coded: false, ..config(ip(6, 2)) }, &meta, &tmp.path().join("plain"), vec![s.client.listen_addr()]).await;
    let coded = leecher(config(ip(6, 3)), &meta, &tmp.path().join("coded"), vec![s.client.listen_addr(), plain.client.listen_addr()]).await;
    assert!(complete(&[&plain, &coded], Duration::from_secs(60)).await);
    assert_exact(&tmp.path().join("plain"), &data);
    assert_exact(&tmp.path().join("coded"), &data);
    assert_eq!(plain.torrent.snapshot().coded_bytes, 0, "a peer with the extension off never goes coded");
    let coded_snap = coded.torrent.snapshot();
    assert!(coded_snap.coded_bytes > 0, "{coded_snap:?}");
    let with_plain = coded_snap.peer_list.iter().find(|p| p.addr.ip() == ip(6, 2));
    assert!(with_plain.is_none_or(|p| !p.coded), "the link to the plain peer stays plain");
}

/// A sender whose upload cap holds its packets back for seconds (tokens
/// come a block at a time) probes the path meanwhile: the receiver keeps
/// the coded link instead of taking the slow sender for a blocked path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_sender_keeps_its_coded_link() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(96 * 1024, 7);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    // 8 kB/s: after the 32 KiB burst, each 16 KiB block waits 2 s for tokens.
    let s = seed(ClientConfig { upload_rate: Some(8_000), ..config(ip(7, 1)) }, &meta, &tmp.path().join("seed"), &data).await;
    let l = leecher(config(ip(7, 2)), &meta, &tmp.path().join("l"), vec![s.client.listen_addr()]).await;
    assert!(complete(&[&l], Duration::from_secs(40)).await, "{:?}", l.torrent.snapshot());
    assert_exact(&tmp.path().join("l"), &data);
    let snap = l.torrent.snapshot();
    assert_eq!(snap.coded_bytes as usize, data.len(), "every block came coded: {snap:?}");
}

/// Where no datagram gets through at all (a firewall, a TCP-only proxy),
/// the opening probes never arrive, so the receiver never asks for coded
/// blocks: everything comes plainly, with no wait for a dead-path timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_udp_path_is_never_used() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(LEN, 8);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    let s = seed(config(ip(8, 1)), &meta, &tmp.path().join("seed"), &data).await;
    let shim = UdpShim { loss: 1.0, seed: 8, ..UdpShim::default() };
    let client = ClientConfig { udp_shim: Some(shim), ..config(ip(8, 2)) };
    let l = leecher(client, &meta, &tmp.path().join("l"), vec![s.client.listen_addr()]).await;
    assert!(complete(&[&l], Duration::from_secs(30)).await, "{:?}", l.torrent.snapshot());
    assert_exact(&tmp.path().join("l"), &data);
    assert_eq!(l.torrent.snapshot().coded_bytes, 0);
    // No want went unanswered, so the dead-path fallback never had to act.
    assert!(l.torrent.coded_reachable(ip(8, 1)), "the peer was taken for a dead path");
}

/// A path that works and then breaks mid-transfer: wants go unanswered,
/// and after a second the receiver takes them back over the plain wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_breaks_mid_transfer_falls_back_to_the_plain_wire() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(LEN, 9);
    let meta = torrent(tmp.path(), "f.bin", &data, PIECE);
    let s = seed(config(ip(9, 1)), &meta, &tmp.path().join("seed"), &data).await;
    // The opening probes and about 25 blocks' packets, then nothing.
    let shim = UdpShim { cut_after: Some(400), seed: 9, ..UdpShim::default() };
    let client = ClientConfig { udp_shim: Some(shim), ..config(ip(9, 2)) };
    let l = leecher(client, &meta, &tmp.path().join("l"), vec![s.client.listen_addr()]).await;
    assert!(complete(&[&l], Duration::from_secs(30)).await, "{:?}", l.torrent.snapshot());
    assert_exact(&tmp.path().join("l"), &data);
    let coded = l.torrent.snapshot().coded_bytes as usize;
    assert!(coded > 0 && coded < LEN, "{coded} of {LEN} bytes came coded");
    assert!(!l.torrent.coded_reachable(ip(9, 1)), "the broken path was not noticed");
}
