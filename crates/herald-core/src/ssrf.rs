//! The SSRF guard's rule: which IP addresses a webhook request may connect to.
//!
//! A webhook URL is configured by a tenant, so without a guard a sender could
//! be pointed at its own loopback, the cluster network or a cloud metadata
//! endpoint. The sender therefore resolves every host itself, checks each
//! address with [`AddressPolicy::check`] and connects only to addresses that
//! passed. Refused are loopback, private, link-local, CGNAT, unique-local,
//! multicast, unspecified, broadcast, "this network" and documentation,
//! benchmarking and reserved ranges, including IPv4 addresses embedded in
//! IPv6 (IPv4-mapped, IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4
//! `2002::/16`), unless the operator allowlisted the address
//! (`HERALD_SSRF_ALLOW`, a comma-separated list of CIDRs).
//!
//! This module is pure: it never resolves names (see `herald_sender::resolver`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The environment variable (and flag) operators use to allowlist ranges;
/// named in every refusal so the fix is obvious.
pub const ALLOW_ENV: &str = "HERALD_SSRF_ALLOW";

/// Which addresses requests may connect to: everything public, plus the
/// operator's allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

/// An address the policy refuses, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub ip: IpAddr,
    /// What kind of address it is.
    pub reason: AddressKind,
}

/// The kinds of address refused unless allowlisted. Each displays as the
/// word refusals have always named it by ("loopback", "CGNAT", ...), which
/// operators read in logs and attempt errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKind {
    /// Loopback (`127.0.0.0/8`, `::1`).
    Loopback,
    /// Private networks (RFC 1918).
    Private,
    /// Link-local, which holds cloud metadata endpoints (`169.254.169.254`).
    LinkLocal,
    /// Carrier-grade NAT's shared space (`100.64.0.0/10`).
    Cgnat,
    /// IPv6 unique-local (`fc00::/7`).
    UniqueLocal,
    /// IPv6 site-local (`fec0::/10`, deprecated but still routed inside some networks).
    SiteLocal,
    /// Multicast.
    Multicast,
    /// The unspecified address (`0.0.0.0`, `::`).
    Unspecified,
    /// The limited broadcast address (`255.255.255.255`).
    Broadcast,
    /// "This network" (`0.0.0.0/8`).
    ThisNetwork,
    /// Documentation ranges (TEST-NET, `2001:db8::/32`).
    Documentation,
    /// Benchmarking ranges (`198.18.0.0/15`, `2001:2::/48`).
    Benchmarking,
    /// Reserved ranges (`192.0.0.0/24`, `240.0.0.0/4`).
    Reserved,
    /// IPv6 discard-only (`100::/64`).
    DiscardOnly,
}

impl AddressKind {
    /// The word a refusal names this kind by.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Cgnat => "CGNAT",
            Self::UniqueLocal => "unique-local",
            Self::SiteLocal => "site-local",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::ThisNetwork => "this-network",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
            Self::DiscardOnly => "discard-only",
        }
    }
}

impl fmt::Display for AddressKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to connect to {} ({} address); allow it with {ALLOW_ENV} if this target is intended",
            self.ip, self.reason
        )
    }
}

impl std::error::Error for Refusal {}

impl AddressPolicy {
    /// A policy that additionally allows every address inside `allow`.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: allow.into_iter().map(|net| net.trunc()).collect(),
        }
    }

    /// Parses a comma-separated allowlist such as `"127.0.0.0/8, ::1/128"`.
    /// A bare address counts as a single-address range; empty entries are
    /// ignored, so `""` is the empty allowlist. The error names the entry
    /// that is not a CIDR.
    pub fn parse_allowlist(list: &str) -> Result<Self, String> {
        let mut allow = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    format!(
                        "{ALLOW_ENV} entry {entry:?} is not a CIDR range such as 10.0.0.0/8 or fd00::/8, nor an IP address"
                    )
                })?;
            allow.push(net);
        }
        Ok(Self::new(allow))
    }

    /// The allowlisted ranges.
    pub fn allowlist(&self) -> &[IpNet] {
        &self.allow
    }

    /// Whether a connection to `ip` is permitted.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(reason) = blocked_reason(ip) else {
            return Ok(());
        };
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || embedded.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(Refusal { ip, reason })
        }
    }

    /// Checks a URL's host if it is an IP literal (`10.0.0.1`, `[::1]` or
    /// `::1`); hostnames pass here, they are checked after resolution.
    ///
    /// The sender must call this before sending: the connector connects to
    /// IP literals directly, without asking the resolver.
    pub fn check_url_host(&self, host: &str) -> Result<(), Refusal> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<IpAddr>() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }
}

/// Why `ip` is refused when not allowlisted, or `None` for a public address.
fn blocked_reason(ip: IpAddr) -> Option<AddressKind> {
    match ip {
        IpAddr::V4(v4) => v4_reason(v4),
        IpAddr::V6(v6) => v6_reason(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    };
    let [a, b, c, d, e, f, g, h] = net;
    u128::from(ip) & mask == u128::from(Ipv6Addr::new(a, b, c, d, e, f, g, h)) & mask
}

fn v4_reason(ip: Ipv4Addr) -> Option<AddressKind> {
    const RANGES: &[([u8; 4], u32, AddressKind)] = &[
        ([0, 0, 0, 0], 32, AddressKind::Unspecified),
        ([0, 0, 0, 0], 8, AddressKind::ThisNetwork),
        ([10, 0, 0, 0], 8, AddressKind::Private),
        ([100, 64, 0, 0], 10, AddressKind::Cgnat),
        ([127, 0, 0, 0], 8, AddressKind::Loopback),
        ([169, 254, 0, 0], 16, AddressKind::LinkLocal),
        ([172, 16, 0, 0], 12, AddressKind::Private),
        ([192, 0, 0, 0], 24, AddressKind::Reserved),
        ([192, 0, 2, 0], 24, AddressKind::Documentation),
        ([192, 168, 0, 0], 16, AddressKind::Private),
        ([198, 18, 0, 0], 15, AddressKind::Benchmarking),
        ([198, 51, 100, 0], 24, AddressKind::Documentation),
        ([203, 0, 113, 0], 24, AddressKind::Documentation),
        ([224, 0, 0, 0], 4, AddressKind::Multicast),
        ([255, 255, 255, 255], 32, AddressKind::Broadcast),
        ([240, 0, 0, 0], 4, AddressKind::Reserved),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
}

fn v6_reason(ip: Ipv6Addr) -> Option<AddressKind> {
    const RANGES: &[([u16; 8], u32, AddressKind)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 128, AddressKind::Unspecified),
        ([0, 0, 0, 0, 0, 0, 0, 1], 128, AddressKind::Loopback),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, AddressKind::DiscardOnly),
        (
            [0x2001, 0x2, 0, 0, 0, 0, 0, 0],
            48,
            AddressKind::Benchmarking,
        ),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            AddressKind::Documentation,
        ),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, AddressKind::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, AddressKind::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, AddressKind::SiteLocal),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, AddressKind::Multicast),
    ];
    if let Some(reason) = RANGES
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, reason)| *reason)
    {
        return Some(reason);
    }
    embedded_v4(ip).and_then(v4_reason)
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), NAT64 well-known
/// prefix (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    if in_v6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in_v6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
        || in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return Some(low32);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressKind::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    /// `(address, None)` = allowed, `(address, Some(reason))` = refused.
    const TABLE: &[(&str, Option<AddressKind>)] = &[
        // IPv4 special ranges.
        ("0.0.0.0", Some(Unspecified)),
        ("0.1.2.3", Some(ThisNetwork)),
        ("10.1.2.3", Some(Private)),
        ("10.255.255.255", Some(Private)),
        ("100.64.0.1", Some(Cgnat)),
        ("100.127.255.254", Some(Cgnat)),
        ("127.0.0.1", Some(Loopback)),
        ("127.255.0.9", Some(Loopback)),
        ("169.254.169.254", Some(LinkLocal)),
        ("169.254.0.1", Some(LinkLocal)),
        ("172.16.0.1", Some(Private)),
        ("172.31.255.255", Some(Private)),
        ("192.0.0.8", Some(Reserved)),
        ("192.0.2.10", Some(Documentation)),
        ("192.168.0.1", Some(Private)),
        ("192.168.255.255", Some(Private)),
        ("198.18.0.1", Some(Benchmarking)),
        ("198.19.255.255", Some(Benchmarking)),
        ("198.51.100.7", Some(Documentation)),
        ("203.0.113.99", Some(Documentation)),
        ("224.0.0.1", Some(Multicast)),
        ("239.255.255.250", Some(Multicast)),
        ("240.0.0.1", Some(Reserved)),
        ("255.255.255.254", Some(Reserved)),
        ("255.255.255.255", Some(Broadcast)),
        // IPv4 public, including the neighbours of blocked ranges.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("9.255.255.255", None),
        ("11.0.0.1", None),
        ("100.63.255.255", None),
        ("100.128.0.1", None),
        ("126.255.255.255", None),
        ("128.0.0.1", None),
        ("169.253.255.255", None),
        ("172.15.255.255", None),
        ("172.32.0.1", None),
        ("192.0.1.1", None),
        ("192.167.255.255", None),
        ("192.169.0.1", None),
        ("198.17.255.255", None),
        ("198.20.0.1", None),
        ("203.0.114.1", None),
        ("223.255.255.255", None),
        // IPv6 special ranges.
        ("::", Some(Unspecified)),
        ("::1", Some(Loopback)),
        ("100::1", Some(DiscardOnly)),
        ("2001:2::1", Some(Benchmarking)),
        ("2001:db8::1", Some(Documentation)),
        ("fc00::1", Some(UniqueLocal)),
        ("fd12:3456:789a::1", Some(UniqueLocal)),
        ("fe80::1", Some(LinkLocal)),
        ("febf:ffff::1", Some(LinkLocal)),
        ("fec0::1", Some(SiteLocal)),
        ("ff02::1", Some(Multicast)),
        ("ff0e::101", Some(Multicast)),
        // IPv4 embedded in IPv6.
        ("::ffff:127.0.0.1", Some(Loopback)),
        ("::ffff:10.0.0.1", Some(Private)),
        ("::ffff:169.254.169.254", Some(LinkLocal)),
        ("::ffff:0.0.0.0", Some(Unspecified)),
        ("::127.0.0.1", Some(Loopback)),
        ("::192.168.1.1", Some(Private)),
        ("64:ff9b::a00:1", Some(Private)),
        ("64:ff9b::7f00:1", Some(Loopback)),
        ("64:ff9b::a9fe:a9fe", Some(LinkLocal)),
        ("2002:c0a8:0101::1", Some(Private)),
        ("2002:7f00:1::", Some(Loopback)),
        ("2002:a9fe:a9fe:1::1", Some(LinkLocal)),
        // IPv6 public, including embedded public IPv4.
        ("::ffff:8.8.8.8", None),
        ("::8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
        ("2606:4700::1111", None),
        ("2a00:1450:4001:80b::200e", None),
        ("2001:db9::1", None),
        ("fbff:ffff::1", None),
        ("ff00::", Some(Multicast)),
    ];

    #[test]
    fn ssrf_table_without_allowlist() {
        assert!(TABLE.len() >= 40);
        let policy = AddressPolicy::default();
        let mut wrong = Vec::new();
        for (addr, expected) in TABLE {
            let got = policy.check(ip(addr)).err().map(|r| r.reason);
            if got != *expected {
                wrong.push(format!("{addr}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn ssrf_allowlist() {
        let policy = AddressPolicy::parse_allowlist("127.0.0.0/8, ::1/128").unwrap();
        for allowed in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "8.8.8.8",
        ] {
            assert_eq!(policy.check(ip(allowed)), Ok(()), "{allowed}");
        }
        for refused in ["10.0.0.1", "::2", "169.254.169.254", "::ffff:10.0.0.1"] {
            assert!(policy.check(ip(refused)).is_err(), "{refused}");
        }

        let policy = AddressPolicy::parse_allowlist("10.1.0.0/16,fd00::/8, 192.168.1.5").unwrap();
        assert_eq!(policy.check(ip("10.1.200.3")), Ok(()));
        assert!(policy.check(ip("10.2.0.1")).is_err());
        assert_eq!(policy.check(ip("fd00::5")), Ok(()));
        assert!(policy.check(ip("fc00::5")).is_err());
        assert_eq!(policy.check(ip("192.168.1.5")), Ok(()));
        assert!(policy.check(ip("192.168.1.6")).is_err());

        // Host bits in a range are tolerated.
        let policy = AddressPolicy::parse_allowlist("127.0.0.1/8").unwrap();
        assert_eq!(
            policy.allowlist(),
            &["127.0.0.0/8".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn ssrf_parse_allowlist() {
        assert_eq!(
            AddressPolicy::parse_allowlist(""),
            Ok(AddressPolicy::default())
        );
        assert_eq!(
            AddressPolicy::parse_allowlist(" , ").unwrap().allowlist(),
            &[] as &[IpNet]
        );
        let error = AddressPolicy::parse_allowlist("127.0.0.0/8, localhost").unwrap_err();
        assert!(error.contains("\"localhost\""), "{error}");
        assert!(error.contains(ALLOW_ENV), "{error}");
        let error = AddressPolicy::parse_allowlist("10.0.0.0/33").unwrap_err();
        assert!(error.contains("\"10.0.0.0/33\""), "{error}");
    }

    #[test]
    fn ssrf_refusal_message() {
        let refusal = AddressPolicy::default().check(ip("10.0.0.1")).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "refusing to connect to 10.0.0.1 (private address); allow it with HERALD_SSRF_ALLOW if this target is intended"
        );
        let refusal = AddressPolicy::default().check(ip("::1")).unwrap_err();
        assert_eq!(refusal.ip, ip("::1"));
        assert_eq!(refusal.reason, Loopback);
    }

    /// The words refusals name each kind by, as operators have always read
    /// them in logs and attempt errors.
    #[test]
    fn address_kinds_keep_their_words() {
        let words: Vec<&str> = [
            Loopback,
            Private,
            LinkLocal,
            Cgnat,
            UniqueLocal,
            SiteLocal,
            Multicast,
            Unspecified,
            Broadcast,
            ThisNetwork,
            Documentation,
            Benchmarking,
            Reserved,
            DiscardOnly,
        ]
        .iter()
        .map(|kind| kind.as_str())
        .collect();
        assert_eq!(
            words,
            [
                "loopback",
                "private",
                "link-local",
                "CGNAT",
                "unique-local",
                "site-local",
                "multicast",
                "unspecified",
                "broadcast",
                "this-network",
                "documentation",
                "benchmarking",
                "reserved",
                "discard-only",
            ]
        );
        assert_eq!(Cgnat.to_string(), "CGNAT");
    }

    #[test]
    fn ssrf_url_host() {
        let policy = AddressPolicy::default();
        assert_eq!(
            policy.check_url_host("127.0.0.1").unwrap_err().reason,
            Loopback
        );
        assert_eq!(policy.check_url_host("[::1]").unwrap_err().reason, Loopback);
        assert_eq!(policy.check_url_host("::1").unwrap_err().reason, Loopback);
        assert_eq!(
            policy
                .check_url_host("[::ffff:169.254.169.254]")
                .unwrap_err()
                .reason,
            LinkLocal
        );
        assert_eq!(policy.check_url_host("example.com"), Ok(()));
        assert_eq!(policy.check_url_host("localhost"), Ok(()));
        assert_eq!(policy.check_url_host("8.8.8.8"), Ok(()));
        assert_eq!(policy.check_url_host("[2606:4700::1111]"), Ok(()));
        let allow = AddressPolicy::parse_allowlist("127.0.0.0/8").unwrap();
        assert_eq!(allow.check_url_host("127.0.0.1"), Ok(()));
    }
}
