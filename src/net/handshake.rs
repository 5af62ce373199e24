//! The BitTorrent handshake, both directions, on any transport: the one
//! place the 68 opening bytes are written and read.

use std::time::Duration;

use ccfd_proto::metainfo::InfoHash;
use ccfd_proto::wire::{Handshake, WireError, HANDSHAKE_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::transport::PeerStream;

/// How long the other side may take to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection did not get past the handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no handshake within {HANDSHAKE_TIMEOUT:?}")]
    TimedOut,
    #[error("peer answered for another torrent")]
    WrongTorrent,
    #[error("unknown info-hash {0}")]
    UnknownTorrent(InfoHash),
}

/// Which side of the connection we are.
pub enum Side<'a> {
    /// We dialed, for this torrent: we speak first.
    Dialer(InfoHash),
    /// They dialed: their info-hash must be one we serve, and says who we
    /// are to its peers (a private torrent's peers hear of no DHT).
    Listener(&'a (dyn Fn(&InfoHash) -> Option<Us> + Send + Sync)),
}

/// Who we say we are: our peer id, and whether we run a DHT node.
#[derive(Debug, Clone, Copy)]
pub struct Us {
    pub peer_id: [u8; 20],
    pub dht: bool,
}

impl Us {
    fn handshake(&self, info_hash: InfoHash) -> Handshake {
        Handshake::new(info_hash, self.peer_id).with_dht(self.dht).with_fast(true)
    }
}

/// Exchanges handshakes as `side`, as `us` (a listener answers as its
/// torrent says); returns theirs.
pub async fn handshake(stream: &mut PeerStream, side: Side<'_>, us: Us) -> Result<Handshake, HandshakeError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange(stream, side, us)).await.map_err(|_| HandshakeError::TimedOut)?
}

async fn exchange(stream: &mut PeerStream, side: Side<'_>, us: Us) -> Result<Handshake, HandshakeError> {
    match side {
        Side::Dialer(info_hash) => {
            stream.write.write_all(&us.handshake(info_hash).to_bytes()).await?;
            let theirs = read(stream).await?;
            if theirs.info_hash != info_hash {
                return Err(HandshakeError::WrongTorrent);
            }
            Ok(theirs)
        }
        Side::Listener(serves) => {
            let theirs = read(stream).await?;
            let Some(us) = serves(&theirs.info_hash) else {
                return Err(HandshakeError::UnknownTorrent(theirs.info_hash));
            };
            stream.write.write_all(&us.handshake(theirs.info_hash).to_bytes()).await?;
            Ok(theirs)
        }
    }
}

async fn read(stream: &mut PeerStream) -> Result<Handshake, HandshakeError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    stream.read.read_exact(&mut buf).await?;
    Ok(Handshake::parse(&buf)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn pair() -> (PeerStream, PeerStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(super::super::transport::connect_tcp("127.0.0.1".parse().unwrap(), addr), listener.accept());
        let (stream, from) = accepted.unwrap();
        (dialed.unwrap(), PeerStream::from_tcp(stream, from, false).unwrap())
    }

    #[tokio::test]
    async fn both_sides_agree_and_a_stranger_is_refused() {
        let hash = InfoHash([5; 20]);
        let a_us = Us { peer_id: *b"-CB0100-aaaaaaaaaaaa", dht: true };
        let b_us = Us { peer_id: *b"-CB0100-bbbbbbbbbbbb", dht: false };
        let serves = move |h: &InfoHash| (*h == InfoHash([5; 20])).then_some(b_us);
        let (mut a, mut b) = pair().await;
        let (ours, theirs) = tokio::join!(handshake(&mut a, Side::Dialer(hash), a_us), handshake(&mut b, Side::Listener(&serves), b_us));
        let (ours, theirs) = (ours.unwrap(), theirs.unwrap());
        assert_eq!(ours.peer_id, b_us.peer_id);
        assert!(!ours.supports_dht());
        assert_eq!(theirs.peer_id, a_us.peer_id);
        assert!(theirs.supports_dht() && theirs.supports_extensions());

        let (mut a, mut b) = pair().await;
        // The listener drops the connection when it refuses it.
        let refused = tokio::spawn(async move { handshake(&mut b, Side::Listener(&serves), b_us).await });
        let ours = handshake(&mut a, Side::Dialer(InfoHash([6; 20])), a_us).await;
        let theirs = refused.await.unwrap();
        assert!(matches!(theirs, Err(HandshakeError::UnknownTorrent(h)) if h == InfoHash([6; 20])));
        assert!(ours.is_err(), "the dialer sees the connection close");
    }
}
