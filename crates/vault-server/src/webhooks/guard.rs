//! Where a webhook may be delivered: never to a link-local or cloud metadata address
//! (169.254.0.0/16, fe80::/10, fd00:ec2::254, and those IPv4 addresses in IPv4-mapped,
//! IPv4-compatible or NAT64 IPv6 form) unless the operator allows it, and never to an address
//! that cannot be a unicast peer (unspecified, broadcast, multicast). Checked on the address a
//! delivery actually connects to, after resolving the name, so a name that resolves somewhere
//! else later does not get through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// AWS's IPv6 instance metadata address.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

/// Why an address is refused, or `None` if a delivery may connect to it.
pub(crate) fn refusal(ip: IpAddr, allow_link_local: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, allow_link_local),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return refusal_v4(v4, allow_link_local);
            }
            if v6.is_unspecified() || v6.is_multicast() {
                return Some("not a unicast address");
            }
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            if !allow_link_local && (link_local || v6 == AWS_METADATA_V6) {
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
    if !allow_link_local && v4.is_link_local() {
        return Some("a link-local or metadata address");
    }
    None
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`)
/// or NAT64 (`64:ff9b::a.b.c.d`) IPv6 address, which reach that IPv4 address.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new(
        (s[6] >> 8) as u8,
        (s[6] & 0xff) as u8,
        (s[7] >> 8) as u8,
        (s[7] & 0xff) as u8,
    );
    let compatible = s[..6].iter().all(|&x| x == 0) && !(s[6] == 0 && s[7] <= 1);
    let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6].iter().all(|&x| x == 0);
    (compatible || nat64).then_some(low)
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
            "fd00:ec2::254",
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
