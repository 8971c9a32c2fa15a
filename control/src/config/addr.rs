//! `host:port` address checks shared by every address key of the configuration.

/// Checks that `addr` is a `host:port` address with a port in 1..=65535; the error says what is
/// wrong and how to write it instead.
pub fn check_addr(addr: &str) -> Result<(), String> {
    const EXAMPLE: &str = "write host:port, e.g. \"127.0.0.1:6379\"";
    if addr.is_empty() {
        return Err(format!("the address is empty: {EXAMPLE}"));
    }
    if addr.chars().any(char::is_whitespace) {
        return Err(format!("\"{addr}\" contains whitespace: {EXAMPLE}"));
    }
    if addr.contains("://") {
        return Err(format!("\"{addr}\" is a URL: {EXAMPLE}"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("\"{addr}\" has no port: {EXAMPLE}"));
    };
    if host.is_empty() {
        return Err(format!("\"{addr}\" has no host: {EXAMPLE}"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        // An IPv6 literal must be bracketed so its colons are not taken for the port separator.
        match inner.strip_suffix(']') {
            Some(ip) if ip.parse::<std::net::Ipv6Addr>().is_ok() => {}
            _ => {
                return Err(format!(
                    "\"{addr}\" has a malformed IPv6 host: write it as \"[::1]:6379\""
                ));
            }
        }
    } else if host.contains(':') {
        return Err(format!(
            "\"{addr}\" looks like a bare IPv6 address: write it as \"[{host}]:{port}\""
        ));
    } else if !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(format!("\"{addr}\" has an invalid host \"{host}\": {EXAMPLE}"));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        _ => Err(format!(
            "\"{addr}\" has port \"{port}\": the port must be a number from 1 to 65535"
        )),
    }
}

/// Formats an IP (as Sentinel reports it) and a port as a `host:port` address, bracketing IPv6.
pub fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') && !ip.starts_with('[') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_addresses() {
        for a in ["127.0.0.1:6379", "localhost:1", "redis-1.internal:65535", "[::1]:6380"] {
            assert_eq!(check_addr(a), Ok(()), "{a}");
        }
    }

    #[test]
    fn bad_addresses_say_why() {
        let cases = [
            ("", "empty"),
            ("127.0.0.1", "no port"),
            (":6379", "no host"),
            ("127.0.0.1:0", "from 1 to 65535"),
            ("127.0.0.1:65536", "from 1 to 65535"),
            ("127.0.0.1:http", "from 1 to 65535"),
            ("127.0.0.1:", "from 1 to 65535"),
            ("::1:6379", "bare IPv6"),
            ("[::zz]:6379", "malformed IPv6"),
            ("[::1:6379", "malformed IPv6"),
            ("127.0.0.1 :6379", "whitespace"),
            ("redis://h:1", "is a URL"),
            ("user@h:1", "invalid host"),
        ];
        for (addr, want) in cases {
            let err = check_addr(addr).expect_err(addr);
            assert!(err.contains(want), "{addr}: {err}");
        }
    }

    #[test]
    fn joins_ipv6_with_brackets() {
        assert_eq!(join_host_port("10.0.0.1", 6379), "10.0.0.1:6379");
        assert_eq!(join_host_port("::1", 6379), "[::1]:6379");
    }
}
