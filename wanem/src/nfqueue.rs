//! The kernel's NFQUEUE over a netlink socket of our own: packets that an
//! iptables rule queues come here with their id and first bytes, and wait in
//! the kernel until we give a verdict. The `nfq` crate does the same but
//! does not expose its descriptor, and the emulator must wait on the socket
//! and on its own timers at once.
//!
//! Message layout (linux/netfilter/nfnetlink_queue.h): a netlink header,
//! a `nfgenmsg` (family, version, queue number big-endian), then attributes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;

/// Bytes of each packet copied to us: enough for an IPv4 header with options
/// and the ports behind it.
pub const COPY_BYTES: u16 = 64;

/// A packet waiting in the kernel for our verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub id: u32,
    /// The first bytes of the packet (its IP header).
    pub head: Vec<u8>,
    /// The packet's full length.
    pub len: u32,
}

/// A bound NFQUEUE.
pub struct NfQueue {
    fd: OwnedFd,
    queue_num: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl NfQueue {
    /// Binds queue `queue_num`, asks for the first `COPY_BYTES` of each
    /// packet and lets the kernel hold up to `max_len` packets for us.
    pub fn bind(queue_num: u16, max_len: u32) -> io::Result<NfQueue> {
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: a zeroed sockaddr_nl with the family set is a valid address (pid 0: the kernel picks).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if bound < 0 {
            return Err(io::Error::last_os_error());
        }
        set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)?;
        // A deep receive buffer: a burst of queued packets must not overflow it.
        let _ = set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 32 << 20);
        let mut queue = NfQueue { fd, queue_num, seq: 0, buf: vec![0; 1 << 20] };
        queue.configure(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8])?;
        let mut params = u32::from(COPY_BYTES).to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        queue.configure(NFQA_CFG_PARAMS, &params)?;
        queue.configure(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())?;
        Ok(queue)
    }

    /// Waits until packets are queued or `timeout` passes; true if readable.
    /// Returns early (false) when a signal arrives.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts =
            timeout.map(|t| libc::timespec { tv_sec: t.as_secs().min(3600) as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd, a valid or null timespec, no signal mask change.
        let n = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::Interrupted { Ok(false) } else { Err(err) };
        }
        Ok(n > 0)
    }

    /// Reads every packet queued so far, without blocking.
    pub fn drain(&mut self, out: &mut Vec<Queued>) -> io::Result<()> {
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), libc::MSG_DONTWAIT) };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            parse_batch(&self.buf[..n as usize], out)?;
        }
    }

    /// Lets the packet go on (`accept`) or drops it.
    pub fn verdict(&mut self, id: u32, accept: bool) -> io::Result<()> {
        let mut body = Vec::with_capacity(8);
        body.extend_from_slice(&u32::from(accept).to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        let msg = self.message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, &[(NFQA_VERDICT_HDR, &body)]);
        self.send(&msg)
    }

    fn configure(&mut self, attr: u16, value: &[u8]) -> io::Result<()> {
        let msg = self.message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, &[(attr, value)]);
        self.send(&msg)?;
        // The acknowledgement: an NLMSG_ERROR whose error is 0.
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            let reply = &self.buf[..n as usize];
            if reply.len() >= NLMSG_HDRLEN + 4 && u16::from_ne_bytes([reply[4], reply[5]]) == NLMSG_ERROR {
                let errno = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
                return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
            }
        }
    }

    fn message(&mut self, kind: u16, flags: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = vec![0u8; NLMSG_HDRLEN];
        msg[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
        msg[6..8].copy_from_slice(&flags.to_ne_bytes());
        msg[8..12].copy_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&[libc::AF_UNSPEC as u8, 0]);
        msg.extend_from_slice(&self.queue_num.to_be_bytes());
        for (kind, value) in attrs {
            msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            msg.extend_from_slice(&kind.to_ne_bytes());
            msg.extend_from_slice(value);
            msg.resize(msg.len().next_multiple_of(4), 0);
        }
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg
    }

    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: msg and addr are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn set_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: value is a valid c_int of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Parses the netlink messages of one `recv` into queued packets. Every
/// length is checked against the bytes at hand; other message kinds are
/// skipped, and an error message from the kernel is returned as an error.
pub fn parse_batch(mut bytes: &[u8], out: &mut Vec<Queued>) -> io::Result<()> {
    while bytes.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            break;
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let body = &bytes[NLMSG_HDRLEN..len];
        if kind == NLMSG_ERROR && body.len() >= 4 {
            let errno = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
            if errno != 0 {
                return Err(io::Error::from_raw_os_error(-errno));
            }
        } else if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET && body.len() >= NFGEN_HDRLEN {
            if let Some(packet) = parse_packet(&body[NFGEN_HDRLEN..]) {
                out.push(packet);
            }
        }
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    Ok(())
}

fn parse_packet(mut attrs: &[u8]) -> Option<Queued> {
    let (mut id, mut head, mut cap_len) = (None, Vec::new(), None);
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            NFQA_PACKET_HDR if value.len() >= 4 => id = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]])),
            NFQA_PAYLOAD => head = value.to_vec(),
            NFQA_CAP_LEN if value.len() >= 4 => cap_len = Some(u32::from_be_bytes([value[0], value[1], value[2], value[3]])),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    let len = cap_len.unwrap_or(head.len() as u32);
    Some(Queued { id: id?, head, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(a.len().next_multiple_of(4), 0);
        a
    }

    fn packet_message(id: u32, payload: &[u8], cap_len: Option<u32>) -> Vec<u8> {
        let mut body = vec![2, 0, 0, 0];
        body.extend(attr(NFQA_PACKET_HDR, &[&id.to_be_bytes()[..], &[0x08, 0x00, 0]].concat()));
        body.extend(attr(NFQA_PAYLOAD, payload));
        if let Some(c) = cap_len {
            body.extend(attr(NFQA_CAP_LEN, &c.to_be_bytes()));
        }
        let mut msg = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        msg.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET).to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend(body);
        msg
    }

    #[test]
    fn packets_of_one_batch_are_read_with_their_full_length() {
        let mut batch = packet_message(7, &[0x45; 64], Some(1500));
        batch.extend(packet_message(8, &[0x45; 40], None));
        let mut out = Vec::new();
        parse_batch(&batch, &mut out).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].id, out[0].len, out[0].head.len()), (7, 1500, 64));
        assert_eq!((out[1].id, out[1].len), (8, 40));
    }

    #[test]
    fn truncated_or_lying_lengths_are_not_trusted() {
        let batch = packet_message(7, &[0x45; 64], Some(1500));
        for cut in 0..batch.len() {
            let mut out = Vec::new();
            let _ = parse_batch(&batch[..cut], &mut out);
            assert!(out.is_empty() || out[0].id == 7);
        }
        let mut lying = batch.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        let mut out = Vec::new();
        parse_batch(&lying, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
