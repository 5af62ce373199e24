//! Reaching a peer, the one way every outgoing connection is made: TCP and
//! uTP race (the first to connect is used; if its handshake fails, the
//! other is tried alone), and with encryption preferred a peer that drops a
//! plain handshake is tried encrypted at once (and the reverse), as
//! libtorrent does, instead of after the reconnect delay.

use std::net::SocketAddr;
use std::time::Duration;

use ccfd_proto::metainfo::InfoHash;
use ccfd_proto::wire::Handshake;

use super::handshake::{handshake, HandshakeError, Side, Us};
use super::mse::{self, Encryption, MseError};
use super::transport::{PeerStream, Transport};
use super::Net;

/// A connection that has passed the BitTorrent handshake.
pub struct Dialed {
    pub stream: PeerStream,
    pub theirs: Handshake,
    /// Whether it went through message stream encryption.
    pub encrypted: bool,
}

/// Why a peer could not be reached; the last attempt's cause.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("{1} (over {0})")]
    Negotiation(Transport, NegotiationError),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// What failed after the connection opened.
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    #[error(transparent)]
    Mse(#[from] MseError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
}

/// Connects to `addr` for `info_hash` and handshakes, trying the other
/// encryption mode and the other transport when one is refused; each
/// attempt may take `attempt_timeout`. `encrypted_first` is what this peer
/// took last time (prefer mode only).
pub async fn dial(
    net: &Net,
    addr: SocketAddr,
    info_hash: InfoHash,
    us: Us,
    encrypted_first: bool,
    attempt_timeout: Duration,
) -> Result<Dialed, DialError> {
    let modes: &[bool] = match net.encryption {
        Encryption::Off => &[false],
        Encryption::Require => &[true],
        Encryption::Prefer if encrypted_first => &[true, false],
        Encryption::Prefer => &[false, true],
    };
    let all = net.transports();
    let mut last = DialError::Connect(std::io::Error::other("no transport to dial on"));
    // Whether the peer answered on some transport: then a mode or a
    // transport that failed is worth trying the other way.
    let mut reached = false;
    for &encrypted in modes {
        let mut transports = all.clone();
        while !transports.is_empty() {
            match tokio::time::timeout(attempt_timeout, open(net, addr, info_hash, us, encrypted, &transports)).await {
                Ok(Ok((stream, theirs))) => return Ok(Dialed { stream, theirs, encrypted }),
                // Nobody listens on any transport: the other mode will not help.
                Ok(Err(e @ DialError::Connect(_))) if !reached => return Err(e),
                Ok(Err(DialError::Negotiation(used, e))) => {
                    tracing::debug!(%addr, encrypted, transport = %used, error = %e, "handshake failed");
                    reached = true;
                    transports.retain(|&t| t != used);
                    last = DialError::Negotiation(used, e);
                }
                // The other transport is not there; the other mode may be.
                Ok(Err(e)) => {
                    last = e;
                    break;
                }
                Err(_) => {
                    tracing::debug!(%addr, encrypted, "connect timed out");
                    last = DialError::TimedOut(attempt_timeout);
                    break;
                }
            }
        }
    }
    Err(last)
}

/// One attempt at `addr` over the first of `transports` to connect, plain or encrypted.
async fn open(
    net: &Net,
    addr: SocketAddr,
    info_hash: InfoHash,
    us: Us,
    encrypted: bool,
    transports: &[Transport],
) -> Result<(PeerStream, Handshake), DialError> {
    let stream = net.connect_first(addr, transports).await.map_err(DialError::Connect)?;
    let used = stream.transport;
    negotiate(net, stream, info_hash, us, encrypted).await.map_err(|e| DialError::Negotiation(used, e))
}

async fn negotiate(
    net: &Net,
    mut stream: PeerStream,
    info_hash: InfoHash,
    us: Us,
    encrypted: bool,
) -> Result<(PeerStream, Handshake), NegotiationError> {
    if encrypted {
        stream = mse::initiate(stream, info_hash, net.encryption).await?.0;
    }
    let theirs = handshake(&mut stream, Side::Dialer(info_hash), us).await?;
    Ok((stream, theirs))
}
