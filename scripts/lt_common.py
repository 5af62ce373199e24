"""Shared python3-libtorrent settings for the test and bench scripts."""
import libtorrent as lt


def loopback_session(ip, port=6881, **extra):
    """A session on IP:PORT with everything that could leave loopback or
    slow a loopback test (DHT, LSD, UPnP, NAT-PMP, uTP) turned off.
    IP may be IPv6 (it is bracketed for libtorrent)."""
    host = f"[{ip}]" if ":" in ip else ip
    settings = {
        "listen_interfaces": f"{host}:{port}",
        "outgoing_interfaces": ip,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    }
    settings.update(extra)
    return lt.session(settings)
