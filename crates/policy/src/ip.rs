//! IP addresses and networks, with IPv4-mapped IPv6 treated as IPv4.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net};

/// Every IPv4 address, `0.0.0.0/0`.
pub(crate) const ALL_IPV4: IpNet = IpNet::new_assert(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
/// Every IPv6 address, `::/0`.
pub(crate) const ALL_IPV6: IpNet = IpNet::new_assert(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);
/// Bits of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) before the IPv4 part.
const MAPPED_PREFIX_BITS: u8 = 96;

/// The address to compare: IPv4-mapped IPv6 becomes the IPv4 address.
pub(crate) fn canonical_address(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// The network to compare against: host bits cleared, and an IPv6 network
/// lying inside `::ffff:0:0/96` rewritten as the IPv4 network it maps.
pub(crate) fn canonical_network(network: IpNet) -> IpNet {
    let network = network.trunc();
    let IpNet::V6(v6) = network else {
        return network;
    };
    if v6.prefix_len() < MAPPED_PREFIX_BITS {
        return network;
    }
    let Some(v4) = v6.network().to_ipv4_mapped() else {
        return network;
    };
    Ipv4Net::new(v4, v6.prefix_len() - MAPPED_PREFIX_BITS)
        .map(IpNet::V4)
        .unwrap_or(network)
}

/// Whether `address` (already canonical) lies inside `network` (already canonical).
pub(crate) fn network_contains(network: &IpNet, address: IpAddr) -> bool {
    network.contains(&address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        canonical_network(text.parse().unwrap())
    }

    fn addr(text: &str) -> IpAddr {
        canonical_address(text.parse().unwrap())
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(addr("::ffff:10.1.2.3"), addr("10.1.2.3"));
        assert!(network_contains(
            &net("10.0.0.0/8"),
            addr("::ffff:10.1.2.3")
        ));
        assert!(!network_contains(&net("::/0"), addr("::ffff:10.1.2.3")));
        assert_eq!(addr("2001:db8::1").to_string(), "2001:db8::1");
    }

    #[test]
    fn mapped_networks_are_ipv4() {
        assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
        assert_eq!(net("::ffff:0:0/96"), ALL_IPV4);
        assert_eq!(net("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
    }

    #[test]
    fn containment() {
        assert!(network_contains(&net("10.0.0.0/8"), addr("10.255.0.1")));
        assert!(!network_contains(&net("10.0.0.0/8"), addr("11.0.0.1")));
        assert!(network_contains(
            &net("2001:db8::/32"),
            addr("2001:db8:1::5")
        ));
        assert!(!network_contains(&net("2001:db8::/32"), addr("10.0.0.1")));
        assert!(network_contains(&ALL_IPV6, addr("::1")));
    }
}
