//! The client's IP address: the TCP peer, or — only when the peer is a configured trusted proxy
//! — the nearest untrusted address in `X-Forwarded-For`. The leftmost entry is chosen by the
//! client and never trusted.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer_ip) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|item| item.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .unwrap_or(peer_ip)
}

/// The unit rate limits count in: one IPv4 address, or one IPv6 /64 (a single host usually
/// holds a whole /64).
pub fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            for segment in &mut segments[4..] {
                *segment = 0;
            }
            format!("{}/64", std::net::Ipv6Addr::from(segments))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert("x-forwarded-for", xff.parse().unwrap());
        map
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpNet = "10.0.0.0/8".parse().unwrap();
        let from_proxy: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let direct: SocketAddr = "203.0.113.9:1234".parse().unwrap();
        let spoofed = headers("1.2.3.4, 198.51.100.7");
        assert_eq!(
            client_ip(direct, &spoofed, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(from_proxy, &spoofed, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(from_proxy, &headers("198.51.100.7, 10.0.0.9"), &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(from_proxy, &HeaderMap::new(), &[proxy]),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(from_proxy, &spoofed, &[]),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_is_bucketed_per_64() {
        let a = bucket("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = bucket("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = bucket("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(bucket("192.0.2.1".parse().unwrap()), "192.0.2.1");
    }
}
