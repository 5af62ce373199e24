//! Port mapping: asks the home router to forward our listen ports (TCP for
//! peers, UDP for uTP, the DHT and coded datagrams) so peers outside can
//! reach a client behind NAT. Two protocols run side by side, as routers
//! speak one or the other: UPnP IGD (igd-next) and NAT-PMP/PCP (crab_nat).
//! Each maps, renews at half the lease, and removes its mappings when the
//! client shuts down. The external address the router reports is kept for
//! the tracker announces.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use igd_next::aio::tokio::search_gateway;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What we ask for; a router may grant less, and we renew at half of it.
const LEASE: Duration = Duration::from_secs(3600);
/// How long an SSDP search for a UPnP gateway may take.
const SEARCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long removing the mappings may hold up shutting down.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);
const DESCRIPTION: &str = "ccfd-bt";

/// The ports to map: TCP for peer connections, UDP for the shared socket.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub tcp: Option<u16>,
    pub udp: u16,
}

/// The address a router says the internet sees us at, once one has said
/// (shared by the port mapper, which learns it, and the announcers).
#[derive(Debug, Clone, Default)]
pub struct ExternalIp(Arc<Mutex<Option<IpAddr>>>);

impl ExternalIp {
    pub fn get(&self) -> Option<IpAddr> {
        *self.0.lock()
    }

    fn learned(&self, ip: IpAddr) {
        *self.0.lock() = Some(ip);
    }
}

/// The running port mapper's task.
pub struct PortMapper {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PortMapper {
    /// Starts mapping `ports` through whatever gateway answers; stops (and
    /// removes the mappings) when `shutdown` fires.
    pub fn start(bind: IpAddr, ports: Ports, external_ip: ExternalIp, shutdown: CancellationToken) -> PortMapper {
        let task = tokio::spawn(async move {
            tokio::join!(upnp(bind, ports, shutdown.clone(), external_ip.clone()), nat_pmp(ports, shutdown, external_ip));
        });
        PortMapper { task: Mutex::new(Some(task)) }
    }

    /// Waits until the mappings are removed (after shutdown).
    pub async fn closed(&self) {
        let task = self.task.lock().take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// Whether port mapping makes sense on this bind address: not on loopback
/// (a local world, a test), where no router could forward anything.
pub fn worth_mapping(bind: IpAddr) -> bool {
    !bind.is_loopback() && !matches!(bind, IpAddr::V6(_) if !bind.is_unspecified())
}

/// UPnP IGD: find the gateway by SSDP, map each port, renew, remove.
async fn upnp(bind: IpAddr, ports: Ports, shutdown: CancellationToken, learned: ExternalIp) {
    let bind_v4 = match bind {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let mut options = SearchOptions::default();
    options.bind_addr = SocketAddr::new(IpAddr::V4(bind_v4), 0);
    options.timeout = Some(SEARCH_TIMEOUT);
    let gateway = tokio::select! {
        _ = shutdown.cancelled() => return,
        found = search_gateway(options) => match found {
            Ok(gateway) => gateway,
            Err(e) => {
                tracing::debug!(error = %e, "no UPnP gateway");
                return;
            }
        },
    };
    let Some(local_ip) = local_ip_towards(bind, gateway.addr.ip()) else {
        tracing::debug!(gateway = %gateway.addr, "no local address towards the UPnP gateway");
        return;
    };
    let wanted = mapping_list(ports);
    let mut lease = LEASE.as_secs() as u32;
    let mut mapped: Vec<(PortMappingProtocol, u16)> = Vec::new();
    loop {
        mapped.clear();
        for &(protocol, port) in &wanted {
            let local = SocketAddr::new(local_ip, port);
            let mut result = gateway.add_port(igd_protocol(protocol), port, local, lease, DESCRIPTION).await;
            if matches!(result, Err(AddPortError::OnlyPermanentLeasesSupported)) {
                // Old routers: a permanent lease, which we still remove on exit.
                lease = 0;
                result = gateway.add_port(igd_protocol(protocol), port, local, lease, DESCRIPTION).await;
            }
            match result {
                Ok(()) => mapped.push((igd_protocol(protocol), port)),
                Err(e) => tracing::warn!(gateway = %gateway.addr, port, ?protocol, error = %e, "UPnP port mapping refused"),
            }
        }
        if mapped.is_empty() {
            return;
        }
        match gateway.get_external_ip().await {
            Ok(ip) => {
                learned.learned(ip);
                tracing::info!(gateway = %gateway.addr, external = %ip, ports = ?mapped, "ports mapped by UPnP");
            }
            Err(e) => {
                tracing::info!(gateway = %gateway.addr, error = %e, ports = ?mapped, "ports mapped by UPnP, external address unknown")
            }
        }
        let renew_in = if lease == 0 { Duration::MAX } else { Duration::from_secs(u64::from(lease) / 2) };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sleep_for(renew_in) => {}
        }
    }
    let remove = async {
        for &(protocol, port) in &mapped {
            if let Err(e) = gateway.remove_port(protocol, port).await {
                tracing::debug!(port, error = %e, "UPnP mapping not removed");
            }
        }
    };
    let _ = tokio::time::timeout(REMOVE_TIMEOUT, remove).await;
}

/// NAT-PMP and PCP (crab_nat tries PCP first) towards the default gateway.
async fn nat_pmp(ports: Ports, shutdown: CancellationToken, learned: ExternalIp) {
    let Some(gateway) = default_gateway_v4() else {
        tracing::debug!("no default IPv4 gateway for NAT-PMP");
        return;
    };
    let Some(local_ip) = local_ip_towards(IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V4(gateway)) else {
        return;
    };
    let timeouts =
        TimeoutConfig { initial_timeout: Duration::from_millis(250), max_retries: 3, max_retry_timeout: Some(Duration::from_secs(2)) };
    let mut mappings = Vec::new();
    for (protocol, port) in mapping_list(ports) {
        let Some(internal) = NonZeroU16::new(port) else { continue };
        let options = PortMappingOptions {
            external_port: Some(internal),
            lifetime_seconds: Some(LEASE.as_secs() as u32),
            timeout_config: Some(timeouts),
        };
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => break,
            attempt = PortMapping::new(gateway.into(), local_ip, protocol, internal, options) => attempt,
        };
        match attempt {
            Ok(mapping) => {
                if mapping.external_port() != internal {
                    tracing::warn!(
                        port,
                        external = mapping.external_port(),
                        "NAT-PMP mapped a different external port; peers are told our own"
                    );
                }
                mappings.push(mapping);
            }
            Err(e) => tracing::debug!(%gateway, port, ?protocol, error = %e, "no NAT-PMP/PCP mapping"),
        }
    }
    if mappings.is_empty() {
        return;
    }
    let external = match mappings[0].mapping_type() {
        crab_nat::PortMappingType::Pcp { external_ip, .. } => Some(external_ip),
        crab_nat::PortMappingType::NatPmp => crab_nat::natpmp::external_address(gateway.into(), Some(timeouts)).await.ok().map(IpAddr::V4),
    };
    if let (Some(ip), None) = (external, learned.get()) {
        learned.learned(ip);
    }
    match external {
        Some(ip) => tracing::info!(%gateway, external = %ip, mappings = mappings.len(), "ports mapped by NAT-PMP/PCP"),
        None => tracing::info!(%gateway, mappings = mappings.len(), "ports mapped by NAT-PMP/PCP, external address unknown"),
    }
    loop {
        let lifetime = mappings.iter().map(PortMapping::lifetime).min().unwrap_or(0).max(60);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(u64::from(lifetime) / 2)) => {}
        }
        for mapping in &mut mappings {
            if let Err(e) = mapping.renew().await {
                tracing::warn!(%gateway, port = mapping.internal_port(), error = %e, "NAT-PMP/PCP renewal failed");
            }
        }
    }
    let remove = async {
        for mapping in mappings {
            if let Err((e, _)) = mapping.try_drop().await {
                tracing::debug!(error = %e, "NAT-PMP/PCP mapping not removed");
            }
        }
    };
    let _ = tokio::time::timeout(REMOVE_TIMEOUT, remove).await;
}

/// Each port with its protocol.
fn mapping_list(ports: Ports) -> Vec<(InternetProtocol, u16)> {
    let mut out = Vec::new();
    if let Some(tcp) = ports.tcp {
        out.push((InternetProtocol::Tcp, tcp));
    }
    out.push((InternetProtocol::Udp, ports.udp));
    out
}

fn igd_protocol(protocol: InternetProtocol) -> PortMappingProtocol {
    match protocol {
        InternetProtocol::Tcp => PortMappingProtocol::TCP,
        InternetProtocol::Udp => PortMappingProtocol::UDP,
    }
}

/// Sleeps, treating `Duration::MAX` as forever.
async fn sleep_for(duration: Duration) {
    match tokio::time::Instant::now().checked_add(duration) {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Our address on the link towards `gateway`: the one the kernel would
/// send from (a connected UDP socket sends nothing).
fn local_ip_towards(bind: IpAddr, gateway: IpAddr) -> Option<IpAddr> {
    if let IpAddr::V4(v4) = bind {
        if !v4.is_unspecified() {
            return Some(bind);
        }
    }
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((gateway, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The default IPv4 gateway, from the kernel's routing table (Linux).
fn default_gateway_v4() -> Option<Ipv4Addr> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&table)
}

/// The gateway of the first default route in `/proc/net/route` text: the
/// destination and the gateway are little-endian hex.
fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (destination, gateway) = (fields.get(1)?, fields.get(2)?);
        if *destination != "00000000" {
            return None;
        }
        let raw = u32::from_str_radix(gateway, 16).ok()?;
        let ip = Ipv4Addr::from(raw.swap_bytes());
        (!ip.is_unspecified()).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_route_gives_the_gateway() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_default_gateway(table), Some(Ipv4Addr::new(192, 168, 1, 1)));
    }

    #[test]
    fn no_default_route_no_gateway() {
        let table = "Iface\tDestination\tGateway\n eth0\t0000A8C0\t00000000\n";
        assert_eq!(parse_default_gateway(table), None);
        assert_eq!(parse_default_gateway(""), None);
        assert_eq!(parse_default_gateway("header\nbroken"), None);
    }

    #[test]
    fn loopback_and_specific_v6_binds_are_not_mapped() {
        assert!(!worth_mapping("127.0.0.5".parse().unwrap()));
        assert!(!worth_mapping("::1".parse().unwrap()));
        assert!(!worth_mapping("2001:db8::1".parse().unwrap()));
        assert!(worth_mapping("::".parse().unwrap()));
        assert!(worth_mapping("0.0.0.0".parse().unwrap()));
        assert!(worth_mapping("192.168.1.20".parse().unwrap()));
    }
}
