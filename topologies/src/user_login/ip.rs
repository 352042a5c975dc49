//! IP address text: checking it, and its canonical form, without std's
//! general parser and formatter where a cheaper exact path exists (these ran
//! per login record and cost as much as decoding it).

use std::net::{IpAddr, Ipv6Addr};

/// Whether `ip` is an IPv4 or IPv6 address, exactly as std's parser decides.
pub(super) fn is_valid(ip: &str) -> bool {
    is_ipv4(ip.as_bytes()) || ipv6(ip).is_some() || ip.parse::<IpAddr>().is_ok()
}

/// An IPv6 address: hex groups and `::` by hand, the rest (a dotted IPv4
/// tail, malformed text) by std's parser.
fn ipv6(ip: &str) -> Option<Ipv6Addr> {
    hex_groups_ipv6(ip.as_bytes()).or_else(|| ip.parse().ok())
}

/// Only hex groups and at most one `::`, as std accepts them; `None` for
/// anything else, including forms std accepts that this does not read.
fn hex_groups_ipv6(b: &[u8]) -> Option<Ipv6Addr> {
    if b.len() < 2 || b.len() > IPV6_MAX {
        return None;
    }
    // Groups before and after the `::`, if any.
    let (mut head, mut tail) = ([0u16; 8], [0u16; 8]);
    let (mut n_head, mut n_tail, mut gap) = (0, 0, false);
    let mut i = 0;
    if b.starts_with(b"::") {
        if b.len() == 2 {
            return Some(Ipv6Addr::UNSPECIFIED);
        }
        gap = true;
        i = 2;
    }
    loop {
        let start = i;
        let mut group = 0u16;
        while i < b.len() && i - start < 4 {
            let Some(d) = char::from(b[i]).to_digit(16) else {
                break;
            };
            group = group << 4 | d as u16;
            i += 1;
        }
        let more_digits = b.get(i).is_some_and(u8::is_ascii_hexdigit);
        if i == start || more_digits {
            return None;
        }
        let (groups, n) = if gap {
            (&mut tail, &mut n_tail)
        } else {
            (&mut head, &mut n_head)
        };
        *groups.get_mut(*n)? = group;
        *n += 1;
        if i == b.len() {
            break;
        }
        if b[i] != b':' || i + 1 == b.len() {
            return None;
        }
        i += 1;
        if b[i] == b':' {
            if gap {
                return None;
            }
            gap = true;
            i += 1;
            if i == b.len() {
                break;
            }
        }
    }
    // `::` stands for at least one group.
    let fits = if gap {
        n_head + n_tail < 8
    } else {
        n_head == 8
    };
    if !fits {
        return None;
    }
    head[8 - n_tail..].copy_from_slice(&tail[..n_tail]);
    Some(Ipv6Addr::from(head))
}

/// Dotted-quad IPv4 as std accepts it: four decimal octets up to 255,
/// without leading zeros. Only ever says yes where std does; anything
/// else goes to std's parser.
fn is_ipv4(b: &[u8]) -> bool {
    if b.len() > 15 {
        return false;
    }
    let mut octets = 0;
    for part in b.split(|&c| c == b'.') {
        let ok = match part {
            [d] => d.is_ascii_digit(),
            [b'1'..=b'9', d] => d.is_ascii_digit(),
            [b'1', d, e] => d.is_ascii_digit() && e.is_ascii_digit(),
            [b'2', b'0'..=b'4', e] => e.is_ascii_digit(),
            [b'2', b'5', b'0'..=b'5'] => true,
            _ => false,
        };
        octets += 1;
        if !ok || octets > 4 {
            return false;
        }
    }
    octets == 4
}

/// IPv4 text that validates is already canonical (Rust refuses leading
/// zeros), and text without a colon is no IPv6 address: either way it is
/// kept without parsing it a second time. IPv6 is rewritten in its RFC 5952
/// form, and kept as it is when it already is in that form.
pub(super) fn canonical(ip: String) -> String {
    if !ip.contains(':') {
        return ip;
    }
    let Some(parsed) = ipv6(&ip) else {
        return ip;
    };
    let mut buf = [0; IPV6_MAX];
    match rfc5952(&parsed, &mut buf) {
        Some(text) if text == ip.as_bytes() => ip,
        Some(text) => std::str::from_utf8(text).map_or(ip, str::to_owned),
        None => parsed.to_string(),
    }
}

const IPV6_MAX: usize = 39;

/// The RFC 5952 text of `ip`, byte for byte what std's `Display` writes,
/// without the formatting machinery, which cost a quarter of the per-record
/// work on IPv6 logins (callgrind). `None` for IPv4-mapped addresses, which
/// std writes with a dotted quad; they are rare enough to leave to it.
fn rfc5952<'b>(ip: &Ipv6Addr, buf: &'b mut [u8; IPV6_MAX]) -> Option<&'b [u8]> {
    if ip.to_ipv4_mapped().is_some() {
        return None;
    }
    let segments = ip.segments();
    // The longest run of zero groups, the first of equals, if longer than one.
    let (mut zeros, mut run) = ((0, 0), (0, 0));
    for (i, &s) in segments.iter().enumerate() {
        if s != 0 {
            run = (0, 0);
            continue;
        }
        if run.1 == 0 {
            run.0 = i;
        }
        run.1 += 1;
        if run.1 > zeros.1 {
            zeros = run;
        }
    }
    let mut len = 0;
    if zeros.1 > 1 {
        hex_groups(&segments[..zeros.0], buf, &mut len);
        buf[len..len + 2].copy_from_slice(b"::");
        len += 2;
        hex_groups(&segments[zeros.0 + zeros.1..], buf, &mut len);
    } else {
        hex_groups(&segments, buf, &mut len);
    }
    Some(&buf[..len])
}

/// Lower-case hex without leading zeros, colon-separated.
fn hex_groups(groups: &[u16], buf: &mut [u8; IPV6_MAX], len: &mut usize) {
    for (i, &g) in groups.iter().enumerate() {
        if i > 0 {
            buf[*len] = b':';
            *len += 1;
        }
        let digits = (4 - g.leading_zeros() as usize / 4).max(1);
        for d in (0..digits).rev() {
            buf[*len] = b"0123456789abcdef"[usize::from((g >> (4 * d)) & 0xf)];
            *len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_text_is_what_std_writes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut buf = [0; IPV6_MAX];
        let mut checked = 0;
        for _ in 0..200_000 {
            // Mostly zero groups, so that every placement of runs is met.
            let groups: [u16; 8] = std::array::from_fn(|_| match rng.random_range(0..4) {
                0 | 1 => 0,
                2 => rng.random_range(0..16),
                _ => rng.random(),
            });
            let ip = Ipv6Addr::from(groups);
            match rfc5952(&ip, &mut buf) {
                Some(text) => {
                    assert_eq!(std::str::from_utf8(text).unwrap(), ip.to_string());
                    checked += 1;
                }
                None => assert!(ip.to_ipv4_mapped().is_some()),
            }
        }
        assert!(checked > 190_000);
        for special in ["::", "::1", "1::", "::ffff:1.2.3.4", "1:0:0:2:0:0:0:3"] {
            let ip: Ipv6Addr = special.parse().unwrap();
            assert_eq!(canonical(special.into()), ip.to_string());
        }
    }

    #[test]
    fn ipv6_is_read_exactly_as_std_reads_it() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        let alphabet = b"0123456789abcdefABCDEF::::::0000.g";
        let (mut read, mut valid) = (0, 0);
        for _ in 0..300_000 {
            let len = rng.random_range(0..41);
            let text: String = (0..len)
                .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
                .collect();
            let std_says = text.parse::<Ipv6Addr>().ok();
            if let Some(fast) = hex_groups_ipv6(text.as_bytes()) {
                assert_eq!(Some(fast), std_says, "{text:?}");
                read += 1;
            }
            assert_eq!(ipv6(&text), std_says, "{text:?}");
            valid += usize::from(std_says.is_some());
        }
        // Random text is seldom an address: also every canonical and
        // expanded form of random addresses.
        for _ in 0..100_000 {
            let groups: [u16; 8] = std::array::from_fn(|_| match rng.random_range(0..3) {
                0 => 0,
                1 => rng.random_range(0..256),
                _ => rng.random(),
            });
            let ip = Ipv6Addr::from(groups);
            let full = groups.map(|g| format!("{g:X}")).join(":");
            for text in [ip.to_string(), full] {
                let fast = hex_groups_ipv6(text.as_bytes());
                assert!(fast.is_some() || text.contains('.'), "{text}");
                assert_eq!(ipv6(&text), Some(ip), "{text}");
                read += 1;
            }
        }
        assert!(
            valid > 100 && read > 150_000,
            "{valid} valid, {read} read by hand"
        );
    }

    #[test]
    fn ipv4_is_accepted_exactly_where_std_accepts_it() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let alphabet = b"0123456789.9512.0";
        let mut accepted = 0;
        for _ in 0..300_000 {
            let len = rng.random_range(0..17);
            let text: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let std_ok =
                std::str::from_utf8(&text).is_ok_and(|t| t.parse::<std::net::Ipv4Addr>().is_ok());
            assert_eq!(
                is_ipv4(&text),
                std_ok,
                "{:?}",
                String::from_utf8_lossy(&text)
            );
            accepted += usize::from(std_ok);
        }
        // Random text is seldom an address: also octets near the limits,
        // with leading zeros now and then, and too few or too many of them.
        for _ in 0..100_000 {
            let parts = rng.random_range(3..6);
            let text = (0..parts)
                .map(|_| match rng.random_range(0..6) {
                    0 => format!("0{}", rng.random_range(0..30)),
                    1 => rng.random_range(240..300).to_string(),
                    _ => rng.random_range(0..256).to_string(),
                })
                .collect::<Vec<_>>()
                .join(".");
            let std_ok = text.parse::<std::net::Ipv4Addr>().is_ok();
            assert_eq!(is_ipv4(text.as_bytes()), std_ok, "{text}");
            accepted += usize::from(std_ok);
        }
        assert!(
            accepted > 5_000,
            "only {accepted} valid addresses were tried"
        );
        for (text, ok) in [
            ("0.0.0.0", true),
            ("255.255.255.255", true),
            ("256.1.1.1", false),
            ("01.1.1.1", false),
            ("1.1.1", false),
            ("1.1.1.1.", false),
            ("1..1.1", false),
            ("::1", true),
            ("1.2.3.4 ", false),
        ] {
            assert_eq!(is_valid(text), ok, "{text}");
        }
    }
}
