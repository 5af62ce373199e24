//! Message stream encryption (MSE/PE, as libtorrent, Vuze and Transmission
//! speak it): a Diffie-Hellman exchange over a 768-bit prime, then RC4
//! keyed by the shared secret and the info-hash, the first 1024 bytes of
//! each keystream dropped. Each side may pad its key with 0..512 random
//! bytes, so the other side finds the next step by scanning for a known
//! pattern; every scan and length is bounded.
//!
//! The initiator offers plaintext and/or RC4 for what follows the
//! handshake, and the receiver picks one; either way the negotiation
//! itself hides the BitTorrent handshake from a middlebox. What comes out
//! is a [`PeerStream`] like any other: the BitTorrent handshake follows
//! inside it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use ccfd_proto::metainfo::InfoHash;
use num_bigint::BigUint;
use rand::Rng;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::transport::Obfuscation;
use super::transport::{BoxRead, BoxWrite, PeerStream};

/// The MSE prime (not RFC 2409's Oakley group; it ends ...A63A36210000000000090563).
const PRIME: [u8; 96] = hex96("FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563");
/// Padding after a key, and PadC/PadD, at most.
const MAX_PAD: usize = 512;
/// The initial payload a receiver takes (libtorrent sends the 68-byte handshake there).
const MAX_IA: usize = 68;
/// crypto_provide / crypto_select bits.
const PLAINTEXT: u32 = 0x01;
const RC4_BIT: u32 = 0x02;
/// How long the whole negotiation may take.
pub const MSE_TIMEOUT: Duration = Duration::from_secs(15);
/// The first 20 bytes of a plain BitTorrent handshake.
pub const BT_PROTOCOL: &[u8; 20] = b"\x13BitTorrent protocol";

const fn hex96(s: &str) -> [u8; 96] {
    let b = s.as_bytes();
    let mut out = [0u8; 96];
    let mut i = 0;
    while i < 96 {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'A'..=b'F' => c - b'A' + 10,
        _ => c - b'a' + 10,
    }
}

/// What we want after the key exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Accept both; as initiator offer both, as receiver pick plaintext
    /// (the handshake is still hidden), as libtorrent does.
    Prefer,
    /// RC4 for everything, and no plain BitTorrent handshakes at all.
    Require,
    /// Plain BitTorrent only.
    Off,
}

/// Why an encrypted handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum MseError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("the other side's key is out of range")]
    BadKey,
    #[error("no synchronisation pattern within the allowed padding")]
    NoSync,
    #[error("the other side names a torrent we do not run")]
    UnknownTorrent,
    #[error("bad verification constant")]
    BadVc,
    #[error("padding of {0} bytes (at most 512)")]
    Pad(usize),
    #[error("initial payload of {0} bytes (at most 68)")]
    InitialPayload(usize),
    #[error("no common method (offered {0:#x})")]
    NoMethod(u32),
    #[error("the encrypted handshake took longer than {MSE_TIMEOUT:?}")]
    TimedOut,
}

/// Our half of the Diffie-Hellman exchange.
struct KeyPair {
    private: BigUint,
    public: [u8; 96],
}

impl KeyPair {
    fn new() -> KeyPair {
        let x: [u8; 20] = rand::rng().random();
        let private = BigUint::from_bytes_be(&x);
        let public = to_96(&BigUint::from(2u32).modpow(&private, &BigUint::from_bytes_be(&PRIME)));
        KeyPair { private, public }
    }

    /// The shared secret with `theirs` (refused outside [2, P-2]).
    fn shared(&self, theirs: &[u8]) -> Result<[u8; 96], MseError> {
        let p = BigUint::from_bytes_be(&PRIME);
        let y = BigUint::from_bytes_be(theirs);
        if y < BigUint::from(2u32) || y > &p - 2u32 {
            return Err(MseError::BadKey);
        }
        Ok(to_96(&y.modpow(&self.private, &p)))
    }
}

fn to_96(n: &BigUint) -> [u8; 96] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; 96];
    out[96 - bytes.len().min(96)..].copy_from_slice(&bytes[bytes.len().saturating_sub(96)..]);
    out
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `HASH('req2', SKEY)`: how a receiver recognises a torrent without it being named.
pub fn req2(info_hash: &InfoHash) -> [u8; 20] {
    sha1(&[b"req2", &info_hash.0])
}

/// An RC4 stream after the 1024-byte discard.
fn rc4(key_name: &[u8], secret: &[u8; 96], info_hash: &InfoHash) -> Rc4 {
    let key = sha1(&[key_name, secret, &info_hash.0]);
    // A 20-byte key is always within RC4's 1..=256.
    let mut c = Rc4::new_from_slice(&key).expect("20-byte RC4 key");
    c.apply_keystream(&mut [0u8; 1024]);
    c
}

fn random_pad(max: usize) -> Vec<u8> {
    let mut rng = rand::rng();
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random()).collect()
}

/// Bytes read during the negotiation, with what was read beyond what was used.
struct Incoming<'a> {
    inner: &'a mut BoxRead,
    buf: Vec<u8>,
}

impl Incoming<'_> {
    /// Reads until at least `n` bytes are buffered.
    async fn fill(&mut self, n: usize) -> io::Result<()> {
        let mut chunk = [0u8; 1024];
        while self.buf.len() < n {
            let got = self.inner.read(&mut chunk).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    /// Takes exactly `n` bytes.
    async fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.fill(n).await?;
        Ok(self.buf.drain(..n).collect())
    }

    /// Finds `pattern` starting within `window` bytes and drops everything before and including it.
    async fn sync(&mut self, pattern: &[u8], window: usize) -> Result<(), MseError> {
        loop {
            if let Some(at) = self.buf.windows(pattern.len()).position(|w| w == pattern) {
                if at > window {
                    return Err(MseError::NoSync);
                }
                self.buf.drain(..at + pattern.len());
                return Ok(());
            }
            if self.buf.len() >= window + pattern.len() {
                return Err(MseError::NoSync);
            }
            let want = self.buf.len() + 1;
            self.fill(want).await?;
        }
    }
}

/// Runs the initiator's side on a fresh connection for `info_hash`.
pub async fn initiate(stream: PeerStream, info_hash: InfoHash, policy: Encryption) -> Result<(PeerStream, Obfuscation), MseError> {
    tokio::time::timeout(MSE_TIMEOUT, initiate_inner(stream, info_hash, policy)).await.map_err(|_| MseError::TimedOut)?
}

async fn initiate_inner(mut stream: PeerStream, info_hash: InfoHash, policy: Encryption) -> Result<(PeerStream, Obfuscation), MseError> {
    let keys = KeyPair::new();
    let mut hello = keys.public.to_vec();
    hello.extend(random_pad(MAX_PAD));
    stream.write.write_all(&hello).await?;
    let mut incoming = Incoming { inner: &mut stream.read, buf: Vec::new() };
    let theirs = incoming.take(96).await?;
    let secret = keys.shared(&theirs)?;
    let mut enc = rc4(b"keyA", &secret, &info_hash);
    let mut dec = rc4(b"keyB", &secret, &info_hash);
    let provide = if policy == Encryption::Require { RC4_BIT } else { RC4_BIT | PLAINTEXT };
    let mut step3 = sha1(&[b"req1", &secret]).to_vec();
    let req3 = sha1(&[b"req3", &secret]);
    step3.extend(req2(&info_hash).iter().zip(req3).map(|(a, b)| a ^ b));
    let mut tail = vec![0u8; 8];
    tail.extend_from_slice(&provide.to_be_bytes());
    tail.extend_from_slice(&0u16.to_be_bytes()); // len(PadC)
    tail.extend_from_slice(&0u16.to_be_bytes()); // len(IA): the handshake follows in the stream
    enc.apply_keystream(&mut tail);
    step3.extend(tail);
    stream.write.write_all(&step3).await?;
    // Their VC is the keyB stream's next 8 bytes over zeros.
    let mut vc = [0u8; 8];
    dec.apply_keystream(&mut vc);
    incoming.sync(&vc, MAX_PAD).await?;
    let mut head = incoming.take(6).await?;
    dec.apply_keystream(&mut head);
    let select = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let pad = usize::from(u16::from_be_bytes([head[4], head[5]]));
    if pad > MAX_PAD {
        return Err(MseError::Pad(pad));
    }
    if select.count_ones() != 1 || select & provide == 0 {
        return Err(MseError::NoMethod(select));
    }
    let mut pad_d = incoming.take(pad).await?;
    dec.apply_keystream(&mut pad_d);
    let leftover = std::mem::take(&mut incoming.buf);
    let rc4_after = select == RC4_BIT;
    Ok((wrap(stream, Vec::new(), leftover, rc4_after.then_some((dec, enc))), obfuscation(rc4_after)))
}

/// Runs the receiver's side; `first` holds the bytes already read (the
/// start of their key), `torrent_of` finds the torrent whose `req2` they
/// name.
pub async fn receive(
    stream: PeerStream,
    first: Vec<u8>,
    policy: Encryption,
    torrent_of: &(dyn Fn(&[u8; 20]) -> Option<InfoHash> + Send + Sync),
) -> Result<(PeerStream, Obfuscation, InfoHash), MseError> {
    tokio::time::timeout(MSE_TIMEOUT, receive_inner(stream, first, policy, torrent_of)).await.map_err(|_| MseError::TimedOut)?
}

async fn receive_inner(
    mut stream: PeerStream,
    first: Vec<u8>,
    policy: Encryption,
    torrent_of: &(dyn Fn(&[u8; 20]) -> Option<InfoHash> + Send + Sync),
) -> Result<(PeerStream, Obfuscation, InfoHash), MseError> {
    let mut incoming = Incoming { inner: &mut stream.read, buf: first };
    let theirs = incoming.take(96).await?;
    let keys = KeyPair::new();
    let secret = keys.shared(&theirs)?;
    let mut hello = keys.public.to_vec();
    hello.extend(random_pad(MAX_PAD));
    stream.write.write_all(&hello).await?;
    incoming.sync(&sha1(&[b"req1", &secret]), MAX_PAD).await?;
    let named = incoming.take(20).await?;
    let req3 = sha1(&[b"req3", &secret]);
    let mut wanted = [0u8; 20];
    for (i, b) in wanted.iter_mut().enumerate() {
        *b = named[i] ^ req3[i];
    }
    let info_hash = torrent_of(&wanted).ok_or(MseError::UnknownTorrent)?;
    let mut dec = rc4(b"keyA", &secret, &info_hash);
    let mut enc = rc4(b"keyB", &secret, &info_hash);
    let mut head = incoming.take(14).await?;
    dec.apply_keystream(&mut head);
    if head[..8] != [0u8; 8] {
        return Err(MseError::BadVc);
    }
    let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    let pad = usize::from(u16::from_be_bytes([head[12], head[13]]));
    if pad > MAX_PAD {
        return Err(MseError::Pad(pad));
    }
    let mut pad_c = incoming.take(pad + 2).await?;
    dec.apply_keystream(&mut pad_c);
    let ia_len = usize::from(u16::from_be_bytes([pad_c[pad], pad_c[pad + 1]]));
    if ia_len > MAX_IA {
        return Err(MseError::InitialPayload(ia_len));
    }
    let mut ia = incoming.take(ia_len).await?;
    dec.apply_keystream(&mut ia);
    let select = match policy {
        Encryption::Require if provide & RC4_BIT != 0 => RC4_BIT,
        Encryption::Prefer if provide & PLAINTEXT != 0 => PLAINTEXT,
        Encryption::Prefer if provide & RC4_BIT != 0 => RC4_BIT,
        _ => return Err(MseError::NoMethod(provide)),
    };
    let mut reply = vec![0u8; 8];
    reply.extend_from_slice(&select.to_be_bytes());
    reply.extend_from_slice(&0u16.to_be_bytes()); // len(PadD)
    enc.apply_keystream(&mut reply);
    stream.write.write_all(&reply).await?;
    let leftover = std::mem::take(&mut incoming.buf);
    let rc4_after = select == RC4_BIT;
    Ok((wrap(stream, ia, leftover, rc4_after.then_some((dec, enc))), obfuscation(rc4_after), info_hash))
}

fn obfuscation(rc4: bool) -> Obfuscation {
    if rc4 {
        Obfuscation::Rc4
    } else {
        Obfuscation::Handshake
    }
}

/// The negotiated stream: `plain` (already decrypted) and then `raw`
/// (read but not yet decrypted) come before the rest of the socket.
fn wrap(stream: PeerStream, plain: Vec<u8>, raw: Vec<u8>, ciphers: Option<(Rc4, Rc4)>) -> PeerStream {
    let (dec, enc) = match ciphers {
        Some((d, e)) => (Some(d), Some(e)),
        None => (None, None),
    };
    let obfuscation = obfuscation(dec.is_some());
    let PeerStream { read, write, remote, transport, outgoing, probe, .. } = stream;
    let reader = MseReader { plain, plain_at: 0, raw, raw_at: 0, inner: read, cipher: dec };
    let writer = MseWriter { inner: write, cipher: enc, pending: Vec::new(), pending_at: 0 };
    PeerStream { read: Box::new(reader), write: Box::new(writer), remote, transport, outgoing, obfuscation, probe }
}

/// Reads bytes handed over from the negotiation first, then the socket,
/// decrypting what needs it.
pub(crate) struct MseReader {
    plain: Vec<u8>,
    plain_at: usize,
    raw: Vec<u8>,
    raw_at: usize,
    inner: BoxRead,
    cipher: Option<Rc4>,
}

impl MseReader {
    /// A stream whose first bytes were already read (a peeked protocol header).
    pub(crate) fn prefixed(inner: BoxRead, prefix: Vec<u8>) -> MseReader {
        MseReader { plain: prefix, plain_at: 0, raw: Vec::new(), raw_at: 0, inner, cipher: None }
    }
}

impl AsyncRead for MseReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.plain_at < this.plain.len() {
            let n = (this.plain.len() - this.plain_at).min(buf.remaining());
            buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
            this.plain_at += n;
            return Poll::Ready(Ok(()));
        }
        if this.raw_at < this.raw.len() {
            let n = (this.raw.len() - this.raw_at).min(buf.remaining());
            let chunk = &mut this.raw[this.raw_at..this.raw_at + n];
            if let Some(c) = &mut this.cipher {
                c.apply_keystream(chunk);
            }
            buf.put_slice(chunk);
            this.raw_at += n;
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(c)) = (&polled, &mut this.cipher) {
            c.apply_keystream(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

/// Encrypts what it writes; bytes encrypted but not yet written are kept,
/// so the keystream and the socket never disagree.
struct MseWriter {
    inner: BoxWrite,
    cipher: Option<Rc4>,
    pending: Vec<u8>,
    pending_at: usize,
}

impl MseWriter {
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending_at < self.pending.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.pending_at..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.pending_at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.pending.clear();
        self.pending_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MseWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.cipher.is_none() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        let n = buf.len().min(64 * 1024);
        this.pending.extend_from_slice(&buf[..n]);
        if let Some(cipher) = &mut this.cipher {
            cipher.apply_keystream(&mut this.pending);
        }
        // What did not go out now goes out on the next write or flush.
        let _ = this.drain(cx)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.drain(cx)?.is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::transport::connect_tcp;
    use tokio::net::TcpListener;

    async fn pair() -> (PeerStream, PeerStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (dialed, accepted) = tokio::join!(connect_tcp("127.0.0.1".parse().unwrap(), addr), listener.accept());
        let (stream, from) = accepted.unwrap();
        (dialed.unwrap(), PeerStream::from_tcp(stream, from, false).unwrap())
    }

    #[test]
    fn the_prime_is_the_mse_prime_and_keys_agree() {
        assert_eq!(BigUint::from_bytes_be(&PRIME).bits(), 768);
        assert_eq!(&PRIME[93..], &[0x09, 0x05, 0x63], "the MSE prime, not Oakley's");
        let (a, b) = (KeyPair::new(), KeyPair::new());
        assert_eq!(a.shared(&b.public).unwrap(), b.shared(&a.public).unwrap());
        assert!(matches!(a.shared(&[0u8; 96]), Err(MseError::BadKey)));
        assert!(matches!(a.shared(&PRIME), Err(MseError::BadKey)));
    }

    async fn negotiate(ours: Encryption, theirs: Encryption) -> Result<(Obfuscation, Obfuscation), MseError> {
        let hash = InfoHash([3; 20]);
        let (a, mut b) = pair().await;
        let receiver = tokio::spawn(async move {
            let mut first = vec![0u8; 20];
            b.read.read_exact(&mut first).await.unwrap();
            let find = move |r: &[u8; 20]| (*r == req2(&InfoHash([3; 20]))).then_some(InfoHash([3; 20]));
            let (mut s, how, found) = receive(b, first, theirs, &find).await?;
            assert_eq!(found, InfoHash([3; 20]));
            let mut got = [0u8; 11];
            s.read.read_exact(&mut got).await?;
            assert_eq!(&got, b"hello there");
            s.write.write_all(b"general kenobi").await?;
            s.write.flush().await?;
            Ok::<_, MseError>(how)
        });
        let (mut s, how) = initiate(a, hash, ours).await?;
        s.write.write_all(b"hello there").await?;
        s.write.flush().await?;
        let mut got = [0u8; 14];
        s.read.read_exact(&mut got).await?;
        assert_eq!(&got, b"general kenobi");
        Ok((how, receiver.await.unwrap()?))
    }

    #[tokio::test]
    async fn both_sides_agree_on_a_method_and_talk() {
        assert_eq!(negotiate(Encryption::Prefer, Encryption::Prefer).await.unwrap(), (Obfuscation::Handshake, Obfuscation::Handshake));
        assert_eq!(negotiate(Encryption::Require, Encryption::Prefer).await.unwrap(), (Obfuscation::Rc4, Obfuscation::Rc4));
        assert_eq!(negotiate(Encryption::Prefer, Encryption::Require).await.unwrap(), (Obfuscation::Rc4, Obfuscation::Rc4));
        assert_eq!(negotiate(Encryption::Require, Encryption::Require).await.unwrap(), (Obfuscation::Rc4, Obfuscation::Rc4));
    }

    #[tokio::test]
    async fn an_unknown_torrent_and_garbage_are_refused() {
        let (a, mut b) = pair().await;
        let receiver = tokio::spawn(async move {
            let mut first = vec![0u8; 20];
            b.read.read_exact(&mut first).await.unwrap();
            receive(b, first, Encryption::Prefer, &|_: &[u8; 20]| None).await.map(|_| ())
        });
        assert!(initiate(a, InfoHash([9; 20]), Encryption::Prefer).await.is_err());
        assert!(matches!(receiver.await.unwrap(), Err(MseError::UnknownTorrent)));
        // A stranger that sends 1,000 random bytes: refused within the padding bound.
        let (mut a, b) = pair().await;
        let junk: Vec<u8> = (0..1000).map(|i| (i * 37 % 251) as u8).collect();
        a.write.write_all(&junk).await.unwrap();
        let r = receive(b, Vec::new(), Encryption::Prefer, &|_: &[u8; 20]| Some(InfoHash([1; 20]))).await;
        assert!(matches!(r, Err(MseError::NoSync) | Err(MseError::BadKey)), "{:?}", r.err());
    }
}
