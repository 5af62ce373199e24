//! One BitTorrent client: the network it shares (`net::Net`), the coded
//! cooperation router, and the torrents it runs. Inbound connections are
//! routed to a torrent by the info-hash in their handshake; `add_torrent`
//! is the one way to start a torrent.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ccfd_proto::metainfo::{InfoHash, Metainfo};
use ccfd_tracker::UdpTiming;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::ccfd::{CodedRouter, UdpShim};
use crate::net::handshake::{handshake, Side};
use crate::net::transport::PeerStream;
use crate::net::{Net, NetConfig, NetError};
use crate::storage::{OpenMode, StorageError};
use crate::swarm::{CodedSetup, Swarm, TorrentConfig};
use crate::torrent::Torrent;

/// Why a client could not start.
pub type ClientError = NetError;

/// Settings of a whole client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Address for the listener and every outgoing socket (each test peer gets its own 127.0.0.x).
    pub bind: IpAddr,
    /// Listen port; 0 picks a free one.
    pub port: u16,
    /// Upload cap in bytes per second, over all peers.
    pub upload_rate: Option<u64>,
    /// Download cap in bytes per second, over all peers.
    pub download_rate: Option<u64>,
    pub udp_timing: UdpTiming,
    /// Connections over all torrents, inbound and outbound together.
    pub max_connections: usize,
    /// Offer coded cooperation (ccfd) to peers; `--no-coded` turns it off.
    pub coded: bool,
    /// Drops and delays our inbound coded datagrams (tests of lossy links).
    pub udp_shim: Option<UdpShim>,
    /// Corrupts every coded payload we send: the polluter of the hostile-peer tests.
    pub coded_polluter: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let net = NetConfig::default();
        ClientConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: net.port,
            upload_rate: None,
            download_rate: None,
            udp_timing: net.udp_timing,
            max_connections: net.max_connections,
            coded: true,
            udp_shim: None,
            coded_polluter: false,
        }
    }
}

/// A running client.
#[derive(Clone)]
pub struct Client {
    pub net: Arc<Net>,
    coded: Option<CodedSetup>,
    torrents: Arc<Mutex<HashMap<InfoHash, Arc<Swarm>>>>,
}

impl Client {
    /// Binds the listener and the UDP socket and starts accepting peers.
    pub async fn start(config: ClientConfig) -> Result<Client, ClientError> {
        let net_config = NetConfig {
            bind: config.bind,
            port: config.port,
            upload_rate: config.upload_rate,
            download_rate: config.download_rate,
            udp_timing: config.udp_timing,
            max_connections: config.max_connections,
        };
        let (net, listener) = Net::start(&net_config).await?;
        let coded = config
            .coded
            .then(|| CodedSetup { router: CodedRouter::start(net.udp.clone(), config.udp_shim), polluter: config.coded_polluter });
        let client = Client { net, coded, torrents: Arc::new(Mutex::new(HashMap::new())) };
        tokio::spawn(accept_loop(client.clone(), listener));
        Ok(client)
    }

    /// The address peers reach us on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.net.listen_addr
    }

    /// Opens a torrent's storage (re-checking what is there) and starts it:
    /// its swarm, its tasks, and the routing of its inbound peers.
    pub async fn add_torrent(
        &self,
        meta: Arc<Metainfo>,
        root: &Path,
        mode: OpenMode,
        config: TorrentConfig,
        peers: Vec<SocketAddr>,
    ) -> Result<Arc<Torrent>, StorageError> {
        let torrent = Torrent::start(self.net.clone(), self.coded.clone(), meta.clone(), root, mode, config, peers).await?;
        let mut torrents = self.torrents.lock();
        torrents.retain(|_, s| !s.shutdown.is_cancelled());
        torrents.insert(meta.info_hash, torrent.swarm().clone());
        Ok(torrent)
    }

    /// The running torrent with this info-hash, if any.
    fn swarm(&self, info_hash: &InfoHash) -> Option<Arc<Swarm>> {
        self.torrents.lock().get(info_hash).filter(|s| !s.shutdown.is_cancelled()).cloned()
    }

    /// Stops the listener and every torrent's tasks.
    pub fn shutdown(&self) {
        self.net.shutdown.cancel();
    }
}

async fn accept_loop(client: Client, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = client.net.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, addr)) => {
                let Some(slot) = client.net.connection_slot() else {
                    tracing::debug!(%addr, "inbound connection refused: connection limit");
                    continue;
                };
                let client = client.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match PeerStream::from_tcp(stream, addr) {
                        Ok(stream) => accept_one(client, stream).await,
                        Err(e) => tracing::debug!(%addr, error = %e, "inbound connection refused"),
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Handshakes an inbound connection and hands it to its torrent.
async fn accept_one(client: Client, mut stream: PeerStream) {
    let addr = stream.remote;
    let serves = |h: &InfoHash| client.swarm(h).is_some();
    match handshake(&mut stream, Side::Listener(&serves), client.net.peer_id).await {
        Ok(theirs) => {
            if let Some(swarm) = client.swarm(&theirs.info_hash) {
                crate::peer::run(swarm, stream, theirs).await;
            }
        }
        Err(e) => tracing::debug!(%addr, error = %e, "inbound connection refused"),
    }
}
