//! A UDP relay that adds a fixed one-way delay, for benchmarks on a kernel
//! without netem: `udp_delay_relay LISTEN TARGET DELAY_MS`. Each client
//! address seen on LISTEN gets its own socket towards TARGET, so TARGET
//! sees one peer per client; both directions wait DELAY_MS, in order.
//! It holds at most `MAX_QUEUED` datagrams per direction and drops beyond
//! that, as a router's buffer would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

const MAX_QUEUED: usize = 20_000;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || std::io::Error::other("usage: udp_delay_relay LISTEN_ADDR TARGET_ADDR DELAY_MS");
    let listen: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let target: SocketAddr = args.get(2).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let delay = Duration::from_millis(args.get(3).and_then(|a| a.parse().ok()).ok_or_else(usage)?);
    let front = Arc::new(UdpSocket::bind(listen).await?);
    eprintln!("relaying {listen} -> {target}, {delay:?} each way");
    let mut upstreams: HashMap<SocketAddr, mpsc::Sender<(Instant, Vec<u8>)>> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, client) = front.recv_from(&mut buf).await?;
        let to_target = match upstreams.get(&client) {
            Some(tx) => tx.clone(),
            None => {
                let back = Arc::new(UdpSocket::bind(SocketAddr::new(listen.ip(), 0)).await?);
                back.connect(target).await?;
                let (tx, rx) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(deliver(rx, back.clone(), None));
                let (back_tx, back_rx) = mpsc::channel(MAX_QUEUED);
                tokio::spawn(deliver(back_rx, front.clone(), Some(client)));
                tokio::spawn(receive(back, back_tx, delay));
                upstreams.insert(client, tx.clone());
                tx
            }
        };
        let _ = to_target.try_send((Instant::now() + delay, buf[..n].to_vec()));
    }
}

/// Reads what the target sends back and queues it, stamped with its due time.
async fn receive(socket: Arc<UdpSocket>, queue: mpsc::Sender<(Instant, Vec<u8>)>, delay: Duration) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = socket.recv(&mut buf).await {
        let _ = queue.try_send((Instant::now() + delay, buf[..n].to_vec()));
    }
}

/// Sends each queued datagram when it is due (the queue is in due order).
async fn deliver(mut queue: mpsc::Receiver<(Instant, Vec<u8>)>, socket: Arc<UdpSocket>, to: Option<SocketAddr>) {
    while let Some((due, datagram)) = queue.recv().await {
        tokio::time::sleep_until(due).await;
        let _ = match to {
            Some(addr) => socket.send_to(&datagram, addr).await,
            None => socket.send(&datagram).await,
        };
    }
}
