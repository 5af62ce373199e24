//! HTTPS trackers: opentracker behind nginx with TLS, its certificate
//! signed by a CA made here with openssl. With that CA in the bundle named
//! by `SSL_CERT_FILE` the announce works; with another CA the client says
//! which tracker failed and why, and never falls back to plain HTTP.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `openssl` with `args` in `dir`; panics with its output on failure.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`name`.key, `name`.pem) and, when `server_ip` is given, a server
/// certificate for that IP address signed by it (server.key, server.pem).
fn make_ca(dir: &Path, name: &str, server_ip: Option<&str>) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        dir,
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &pem, "-days", "2", "-subj", &format!("/CN={name}")],
    );
    if let Some(ip) = server_ip {
        std::fs::write(dir.join("san.ext"), format!("subjectAltName=IP:{ip}\n")).unwrap();
        openssl(
            dir,
            &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", &format!("/CN={ip}")],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &pem,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "san.ext",
            ],
        );
    }
}

/// The system's CA bundle plus `extra`, as a file for `SSL_CERT_FILE`.
fn bundle(dir: &Path, name: &str, extra: &Path) -> String {
    let mut all = std::fs::read("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    all.extend(std::fs::read(extra).unwrap());
    let path = dir.join(name);
    std::fs::write(&path, all).unwrap();
    path.display().to_string()
}

#[test]
fn an_https_tracker_with_a_private_ca() {
    let tmp = test_dir();
    let dir = tmp.path();
    let net = Net::new(95);
    std::fs::create_dir_all(dir.join("seed")).unwrap();
    let file = dir.join("seed/film.bin");
    std::fs::write(&file, payload(300_000, 5)).unwrap();
    // opentracker on plain HTTP; nginx in front of it with TLS.
    let tracker_plain = net.addr(1, 6969);
    let https_port = std::net::TcpListener::bind(net.addr(1, 0)).unwrap().local_addr().unwrap().port();
    let announce = format!("https://{}/announce", net.addr(1, https_port));
    let torrent = dir.join("film.torrent");
    let hash = create_torrent(&file, &torrent, std::slice::from_ref(&announce), 32768);
    let _opentracker = opentracker(dir, &net.ip(1), 6969, std::slice::from_ref(&hash));
    make_ca(dir, "test-ca", Some(&net.ip(1)));
    make_ca(dir, "other-ca", None);
    let server = format!(
        "listen {ip}:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; location / {{ proxy_pass http://{plain}; }}",
        ip = net.ip(1),
        port = https_port,
        cert = dir.join("server.pem").display(),
        key = dir.join("server.key").display(),
        plain = tracker_plain,
    );
    let _nginx = nginx(dir, &net.addr(1, https_port), &server);

    let good = bundle(dir, "good-bundle.pem", &dir.join("test-ca.pem"));
    let data = dir.join("seed").display().to_string();
    let mut seed_cmd = Command::new(BIN);
    seed_cmd.args(local_only(&["seed", torrent.to_str().unwrap(), "--data", &data, "--bind", &net.ip(2), "--port", "7000"]));
    seed_cmd.env("SSL_CERT_FILE", &good).env("RUST_LOG", log_filter());
    let _seed = Proc::spawn("seed", &mut seed_cmd, &dir.join("seed.log"));
    wait_until("the seed to announce over HTTPS", Duration::from_secs(20), || scrape_seeders(&tracker_plain, &hash) >= 1);

    // opentracker sees nginx's address, not the seed's, so the leecher is
    // also told the seed directly; the point here is its HTTPS announce.
    let out = dir.join("out");
    let mut leech = Command::new(BIN);
    let args = [
        "download",
        torrent.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--bind",
        &net.ip(3),
        "--port",
        "0",
        "--peer",
        &net.addr(2, 7000),
    ];
    leech.args(local_only(&args)).env("SSL_CERT_FILE", &good).env("RUST_LOG", "ccfd_bt=info");
    let done = leech.output().unwrap();
    let log = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{log}");
    assert!(log.contains("announced") && log.contains(&announce), "announced over HTTPS: {log}");
    assert_same_file(&file, &out.join("film.bin"));

    // A bundle without our CA: the announce fails, and says where and why.
    let wrong = bundle(dir, "wrong-bundle.pem", &dir.join("other-ca.pem"));
    let mut cmd = Command::new(BIN);
    cmd.args(local_only(&[
        "download",
        torrent.to_str().unwrap(),
        "-o",
        dir.join("out2").to_str().unwrap(),
        "--bind",
        &net.ip(4),
        "--port",
        "0",
    ]));
    cmd.env("SSL_CERT_FILE", &wrong);
    let mut proc = Proc::spawn("leech-wrong-ca", &mut cmd, &dir.join("wrong.log"));
    wait_until("the certificate error", Duration::from_secs(20), || proc.log_text().contains("will retry"));
    let text = proc.log_text();
    assert!(text.contains(&announce) && text.to_lowercase().contains("certificate"), "names the tracker and the certificate: {text}");
    assert!(proc.exited().is_none(), "keeps running: {text}");
    proc.signal(libc::SIGTERM);
    proc.wait(Duration::from_secs(15));
}
