//! Streaming: VoD worlds in-process (short movie, fast rates) and nginx as
//! the VoD server for the command line. Every streamed movie is compared
//! byte for byte with the original.

mod common;

use std::path::Path;
use std::time::Duration;

use ccfd_bt::client::{Client, ClientConfig};
use ccfd_bt::decide::stream_plan::PickMode;
use ccfd_bt::stream::{Stream, StreamOptions};
use ccfd_bt::swarm::TorrentConfig;
use ccfd_bt::world::vod::{VodWorld, VodWorldConfig};
use ccfd_vod::plan::Policy;
use ccfd_vod::Report;
use common::*;

fn movie(dir: &Path, len: usize) -> std::path::PathBuf {
    let path = dir.join("movie.bin");
    std::fs::write(&path, payload(len, 99)).unwrap();
    path
}

/// Streams the world's movie at `rate` B/s with D = 3 s, P = 1 s.
async fn stream_in(world: &VodWorld, dir: &Path, rate: f64) -> (Report, u64) {
    let client = Client::start(ClientConfig { bind: world.client_ip(0), port: 0, ..ClientConfig::default() }).await.unwrap();
    let output = dir.join("out").join("movie.bin");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let opts = StreamOptions {
        rate,
        delay: 3.0,
        prefetch: 1.0,
        server: None,
        output: output.clone(),
        file: 0,
        extras: Vec::new(),
        policy: Policy::default(),
        mode: PickMode::Deadline,
        config: TorrentConfig::default(),
    };
    let stream = Stream::start(&client, &world.meta, &opts, Vec::new()).await.unwrap();
    let report = tokio::time::timeout(Duration::from_secs(120), stream.finish()).await.expect("stream finished in time").unwrap();
    client.shutdown();
    assert_same_file(&dir.join("movie.bin"), &output);
    (report, world.server.served_to(world.client_ip(0)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_world_stream_plays_without_stalls_and_takes_little_from_the_server() {
    let tmp = test_dir();
    let path = movie(tmp.path(), 1_200_000);
    let config = VodWorldConfig { peers: 6, upload: 200_000, piece_length: 32 * 1024, net: [71, 1], ..VodWorldConfig::default() };
    let world = VodWorld::start(&path, tmp.path(), config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (report, served) = stream_in(&world, tmp.path(), 100_000.0).await;
    println!("{report:?}");
    assert_eq!(report.stalls, 0, "{report:?}");
    assert_eq!(report.server_bytes, served, "the ledger agrees with the server's own count");
    assert!(report.server_share < 0.5, "{report:?}");
    assert!(report.continuity > 0.5, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_peers_everything_comes_from_the_server_on_time() {
    let tmp = test_dir();
    let path = movie(tmp.path(), 400_000);
    let config = VodWorldConfig { peers: 0, permanent_seed: false, piece_length: 32 * 1024, net: [71, 2], ..VodWorldConfig::default() };
    let world = VodWorld::start(&path, tmp.path(), config).await.unwrap();
    let (report, served) = stream_in(&world, tmp.path(), 100_000.0).await;
    assert_eq!(report.stalls, 0, "{report:?}");
    assert_eq!(report.server_bytes, 400_000, "every byte from the server, none twice");
    assert_eq!(served, 400_000);
    assert_eq!(report.missed_pieces, report.pieces);
    assert_eq!(report.continuity, 0.0);
}

/// nginx serves the movie with Range support; the default command streams
/// it with no peer at all and writes the file where `-o` says.
#[test]
fn the_command_line_streams_from_nginx_as_the_vod_server() {
    let tmp = test_dir();
    let net = Net::new(72);
    let www = tmp.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let path = movie(&www, 300_000);
    // A free port on our own address (nothing else listens on 127.72.x.1).
    let port = std::net::TcpListener::bind(net.addr(1, 0)).unwrap().local_addr().unwrap().port();
    let conf = tmp.path().join("nginx.conf");
    let scratch = tmp.path().join("nginx-tmp");
    std::fs::create_dir_all(&scratch).unwrap();
    // One process (no workers that outlive a killed master), running as us.
    std::fs::write(
        &conf,
        format!(
            "daemon off; master_process off; pid {pid}; error_log {err}; events {{}}\n\
             http {{ access_log off; server {{ listen {ip}:{port}; root {root}; }} \
             client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp}; }}\n",
            pid = tmp.path().join("nginx.pid").display(),
            err = tmp.path().join("nginx.err").display(),
            ip = net.ip(1),
            root = www.display(),
            tmp = scratch.display(),
        ),
    )
    .unwrap();
    let log = tmp.path().join("nginx.log");
    let _nginx = Proc::spawn("nginx", std::process::Command::new("/usr/sbin/nginx").arg("-c").arg(&conf).arg("-p").arg(tmp.path()), &log);
    wait_port(&net.addr(1, port), Duration::from_secs(20));
    let url = format!("http://{}/movie.bin", net.addr(1, port));
    let torrent = tmp.path().join("movie.torrent");
    let status = std::process::Command::new(BIN)
        .args(["create", path.to_str().unwrap(), "-o", torrent.to_str().unwrap(), "--piece-length", "32768", "--web-seed", &url])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tmp.path().join("watched.bin");
    let (t, o, ip) = (torrent.display().to_string(), out.display().to_string(), net.ip(2));
    let args =
        ["--rate", "200", "--delay", "2", "--prefetch", "1", t.as_str(), "-o", o.as_str(), "--bind", ip.as_str(), "--port", "0", "--json"];
    let (mut proc, json_path) = ccfd_json(tmp.path(), "stream", &args);
    let report = wait_json(&mut proc, &json_path, Duration::from_secs(60));
    assert_same_file(&path, &out);
    assert_eq!(report["server_bytes"], 300_000, "{report}");
    assert_eq!(report["stalls"], 0, "{report}");
}
