//! Swarm mechanics in-process: tit-for-tat choking among real torrents, and
//! a download through hostile links (resets, stalls, garbage, slow seeds).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

mod common;

use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::decide::choker::ChokerConfig;
use ccfd_bt::discovery::PeerSource;
use ccfd_bt::storage::OpenMode;
use ccfd_bt::swarm::{PeerSnapshot, TorrentConfig};
use ccfd_bt::world::{Faults, World};
use common::inproc::*;

fn ip(b: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 50, b, host))
}

fn peer_at(list: &[PeerSnapshot], addr: SocketAddr) -> Option<&PeerSnapshot> {
    list.iter().find(|p| p.addr.ip() == addr.ip())
}

/// L holds the first half of a file; F, S1 and S2 the second half, F
/// uploading ten times faster. L has one regular unchoke slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tit_for_tat_rewards_the_fastest_uploader_and_replaces_it_when_it_slows() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(16 << 20, 11);
    let meta = torrent(tmp.path(), "movie.bin", &data, 64 << 10);
    let half = data.len() / 2;
    let fast_choker = ChokerConfig {
        regular_slots: 1,
        rechoke_interval: Duration::from_millis(1000),
        optimistic_interval: Duration::from_secs(3),
        ..ChokerConfig::default()
    };
    let config = TorrentConfig { choker: fast_choker, ..TorrentConfig::default() };
    let mut others = Vec::new();
    for (i, rate) in [(2u8, 400_000u64), (3, 40_000), (4, 40_000)] {
        let dir = tmp.path().join(format!("p{i}"));
        write_part(&dir, "movie.bin", &data, half..data.len());
        others.push(node(ip(1, i), Some(rate), &meta, &dir, config.clone(), Vec::new()).await);
    }
    let dir = tmp.path().join("l");
    write_part(&dir, "movie.bin", &data, 0..half);
    let addrs: Vec<SocketAddr> = others.iter().map(|n| n.client.listen_addr()).collect();
    let leecher = node(ip(1, 1), Some(200_000), &meta, &dir, config, addrs.clone()).await;
    let (fast, slow) = (addrs[0], &addrs[1..]);
    let regular = |addr: SocketAddr| {
        let snap = leecher.torrent.snapshot();
        peer_at(&snap.peer_list, addr).is_some_and(|p| p.unchoked && !p.optimistic)
    };

    // Once the rates are measured, the fastest uploader holds the regular slot.
    let measured_fastest = || {
        let snap = leecher.torrent.snapshot();
        let rate = |a| peer_at(&snap.peer_list, a).map_or(0.0, |p| p.down_rate);
        rate(fast) > 3.0 * rate(slow[0]).max(rate(slow[1])) && regular(fast)
    };
    assert!(
        eventually(Duration::from_secs(8), measured_fastest).await,
        "F should hold the regular slot: {:?}",
        leecher.torrent.snapshot().peer_list
    );

    // F's uplink degrades: within a few rechokes a slow peer takes its slot.
    others[0].client.net.upload.set_rate(Some(5_000));
    assert!(
        eventually(Duration::from_secs(10), || slow.iter().any(|&a| regular(a)) && !regular(fast)).await,
        "F was not replaced: {:?}",
        leecher.torrent.snapshot().peer_list
    );

    // F recovers: it gets its slot back.
    others[0].client.net.upload.set_rate(Some(400_000));
    assert!(
        eventually(Duration::from_secs(15), || regular(fast)).await,
        "F was not re-selected: {:?}",
        leecher.torrent.snapshot().peer_list
    );
}

/// The networks course's contest: an 805,975-byte file from five seeds
/// behind hostile links (random resets, two slow, one that stalls, one that
/// injects garbage), at most five connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_completes_through_resets_stalls_garbage_and_slow_seeds() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(805_975, 12);
    let meta = torrent(tmp.path(), "contest.bin", &data, 16 << 10);
    let world = World::new(50, 2).unwrap();
    let mut seeds = Vec::new();
    let mut proxies = Vec::new();
    let reset = Some(Duration::from_millis(1500));
    let links = [
        Faults { rate: Some(150_000), mean_lifetime: reset, seed: 1, ..Faults::default() },
        Faults { rate: Some(150_000), mean_lifetime: reset, garbage_chance: 0.5, seed: 2, ..Faults::default() },
        Faults { rate: Some(15_000), mean_lifetime: reset, seed: 3, ..Faults::default() },
        Faults { rate: Some(15_000), seed: 4, ..Faults::default() },
        Faults { rate: Some(150_000), stall_chance: 1.0, seed: 5, ..Faults::default() },
    ];
    for (i, faults) in links.into_iter().enumerate() {
        let dir = tmp.path().join(format!("seed{i}"));
        write_part(&dir, "contest.bin", &data, 0..data.len());
        let seed = node(ip(2, 10 + i as u8), None, &meta, &dir, TorrentConfig::default(), Vec::new()).await;
        let proxy = world.proxy(seed.client.listen_addr(), faults).unwrap();
        seeds.push(seed);
        proxies.push(proxy);
    }
    let config = TorrentConfig {
        max_peers: 5,
        snub_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(4),
        connect_timeout: Duration::from_secs(2),
        ..TorrentConfig::default()
    };
    let dir = tmp.path().join("leech");
    std::fs::create_dir_all(&dir).unwrap();
    let client = Client::start(ClientConfig { bind: ip(2, 1), port: 0, max_connections: 5, ..ClientConfig::default() }).await.unwrap();
    let addrs = proxies.iter().map(|p| p.addr).collect();
    let torrent = client.add_torrent(meta.clone(), &dir, OpenMode::Create, config, addrs).await.unwrap();
    let mut done = torrent.subscribe_complete();
    let start = Instant::now();
    let finished = tokio::time::timeout(Duration::from_secs(60), done.wait_for(|&c| c)).await;
    let snap = torrent.snapshot();
    assert!(finished.is_ok(), "not complete after 60 s: {snap:?}");
    assert_eq!(std::fs::read(dir.join("contest.bin")).unwrap(), data);
    let from = |i: usize| snap.bytes_from.iter().filter(|(a, _)| a.ip() == proxies[i].addr.ip()).map(|(_, b)| *b).sum::<u64>();
    let counts: Vec<u64> = (0..5).map(from).collect();
    let stat = |f: fn(&ccfd_bt::world::ProxyStats) -> &std::sync::atomic::AtomicU64| -> u64 {
        proxies.iter().map(|p| f(&p.stats).load(std::sync::atomic::Ordering::Relaxed)).sum()
    };
    println!(
        "{:.1} s; bytes per seed {counts:?}; resets {}, stalls {}, garbage {}, piece failures {}",
        start.elapsed().as_secs_f64(),
        stat(|s| &s.resets),
        stat(|s| &s.stalls),
        stat(|s| &s.garbage),
        snap.piece_failures,
    );
    assert!(stat(|s| &s.resets) > 0 && stat(|s| &s.stalls) > 0, "the faults did happen");
    // Work stealing, not a static split: the fast links carried far more than the slow ones.
    assert!(counts[0] + counts[1] > 4 * (counts[2] + counts[3]), "{counts:?}");
    client.shutdown();
}

/// A peer address handed to a running torrent (a tracker reply) is dialed
/// at once, not at the next once-a-second maintenance tick: a leecher that
/// learns of a seed just after a tick would otherwise idle for a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_candidates_are_dialed_at_once() {
    init_log();
    let tmp = tempfile::tempdir().unwrap();
    let data = payload(64 << 10, 13);
    let meta = torrent(tmp.path(), "quick.bin", &data, 16 << 10);
    let seed_dir = tmp.path().join("seed");
    write_part(&seed_dir, "quick.bin", &data, 0..data.len());
    let seed = node(ip(3, 1), None, &meta, &seed_dir, TorrentConfig::default(), Vec::new()).await;
    let leech_dir = tmp.path().join("leech");
    write_part(&leech_dir, "quick.bin", &data, 0..0);
    let leech = node(ip(3, 2), None, &meta, &leech_dir, TorrentConfig::default(), Vec::new()).await;
    // The leecher's first tick ran when it started; the next is a second after it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let told = Instant::now();
    leech.torrent.add_candidates([seed.client.listen_addr()], PeerSource::Tracker);
    assert!(eventually(Duration::from_secs(3), || leech.torrent.peer_count() == 1).await, "never connected");
    let waited = told.elapsed();
    assert!(waited < Duration::from_millis(500), "dialed only after {waited:?}, at the next tick");
}
