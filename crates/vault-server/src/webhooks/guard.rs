//! Where a webhook may be delivered: never to a link-local or cloud metadata address
//! (169.254.0.0/16 with AWS's, GCP's and Azure's metadata, fe80::/10, AWS's fd00:ec2::254,
//! GCP's fd20:ce::254, Alibaba's 100.100.100.200, Azure's WireServer 168.63.129.16, and those
//! IPv4 addresses in IPv4-mapped, IPv4-compatible, NAT64, 6to4 or Teredo IPv6 form) unless the
//! operator allows it, and never to an address that cannot be a unicast peer (unspecified,
//! broadcast, multicast). Checked on the address a delivery actually connects to, after
//! resolving the name, so a name that resolves somewhere else later does not get through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cloud metadata and host-control addresses outside the link-local ranges.
const METADATA_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), // AWS
    Ipv6Addr::new(0xfd20, 0x00ce, 0, 0, 0, 0, 0, 0x0254), // Google Cloud
];
const METADATA_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer
];

/// Why an address is refused, or `None` if a delivery may connect to it.
pub(crate) fn refusal(ip: IpAddr, allow_link_local: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, allow_link_local),
        IpAddr::V6(v6) => {
            for v4 in embedded_v4(v6).into_iter().flatten() {
                if let Some(why) = refusal_v4(v4, allow_link_local) {
                    return Some(why);
                }
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Some("not a unicast address");
            }
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            if !allow_link_local && (link_local || METADATA_V6.contains(&v6)) {
                return Some("a link-local or metadata address");
            }
            None
        }
    }
}

fn refusal_v4(v4: Ipv4Addr, allow_link_local: bool) -> Option<&'static str> {
    if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
        return Some("not a unicast address");
    }
    if !allow_link_local && (v4.is_link_local() || METADATA_V4.contains(&v4)) {
        return Some("a link-local or metadata address");
    }
    None
}

/// The IPv4 addresses an IPv6 address reaches: inside an IPv4-mapped (`::ffff:a.b.c.d`),
/// IPv4-compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`) or 6to4
/// (`2002:AABB:CCDD::/48`) address, or a Teredo one (`2001::/32`: its server, and its client
/// stored inverted).
fn embedded_v4(v6: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let s = v6.segments();
    let v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(mapped) = v6.to_ipv4_mapped() {
        return [Some(mapped), None];
    }
    let low = v4(s[6], s[7]);
    let compatible = s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && (s[2] == 0 || s[2] == 1);
    if compatible || nat64 {
        return [Some(low), None];
    }
    match s[0] {
        0x2002 => [Some(v4(s[1], s[2])), None],
        0x2001 if s[1] == 0 => [Some(v4(s[2], s[3])), Some(v4(!s[6], !s[7]))],
        _ => [None, None],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> bool {
        refusal(s.parse().unwrap(), false).is_some()
    }

    #[test]
    fn metadata_and_link_local_addresses_are_refused_in_every_form() {
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "2001:0:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601", // a Teredo client 169.254.169.254, inverted
            "fd00:ec2::254",
            "fd20:ce::254",
            "100.100.100.200",
            "168.63.129.16",
            "fe80::1",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "ff02::1",
        ] {
            assert!(refused(bad), "{bad} must be refused");
        }
        for good in [
            "127.0.0.1",
            "::1",
            "10.0.0.5",
            "93.184.216.34",
            "2001:db8::1",
        ] {
            assert!(!refused(good), "{good} must be allowed");
        }
    }

    #[test]
    fn the_operator_can_allow_link_local_but_never_non_unicast() {
        let allowed = |s: &str| refusal(s.parse().unwrap(), true).is_none();
        assert!(allowed("169.254.169.254"));
        assert!(allowed("fd00:ec2::254"));
        assert!(!allowed("0.0.0.0"));
        assert!(!allowed("224.0.0.1"));
    }
}
