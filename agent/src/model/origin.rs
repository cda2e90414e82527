//! Where a login came from, for alerts: its terminal and, for ssh, the
//! remote address. Read from `/proc` when an alert is raised, for the
//! process and its ancestors (the login shell holds both), so known only
//! while one of them lives.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The controlling terminal, e.g. `pts/3`.
    pub tty: Option<String>,
    /// The ssh client, `address:port`, from the login's `SSH_CONNECTION`.
    pub remote_address: Option<String>,
}

/// The origin of the processes `pids` (nearest first): the first terminal and
/// the first ssh client found.
pub fn origin(pids: impl IntoIterator<Item = u32>) -> Origin {
    let mut found = Origin::default();
    for pid in pids {
        if found.tty.is_none() {
            found.tty = std::fs::read(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| tty_of_stat(&stat));
        }
        if found.remote_address.is_none() {
            found.remote_address = std::fs::read(format!("/proc/{pid}/environ"))
                .ok()
                .and_then(|env| ssh_client(&env));
        }
        if found.tty.is_some() && found.remote_address.is_some() {
            break;
        }
    }
    found
}

/// The terminal in `/proc/PID/stat` (its `tty_nr`), named as in `/dev`.
fn tty_of_stat(stat: &[u8]) -> Option<String> {
    // The command may hold anything, ")" included: fields follow the last ")".
    let after = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let tty_nr: u32 = std::str::from_utf8(after)
        .ok()?
        .split_whitespace()
        .nth(4)?
        .parse()
        .ok()?;
    if tty_nr == 0 {
        return None;
    }
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    Some(match major {
        // UNIX 98 pseudo-terminals: 256 per major.
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        _ => format!("{major}:{minor}"),
    })
}

/// `address:port` of the ssh client in an environment block
/// (`SSH_CONNECTION=client port server port`).
fn ssh_client(environ: &[u8]) -> Option<String> {
    let value = environ
        .split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"SSH_CONNECTION="))?;
    let value = std::str::from_utf8(value).ok()?;
    let mut fields = value.split_whitespace();
    let (address, port) = (fields.next()?, fields.next()?.parse::<u16>().ok()?);
    let address: std::net::IpAddr = address.parse().ok()?;
    Some(std::net::SocketAddr::new(address, port).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminals_are_named_as_in_dev() {
        let stat = |tty_nr: u32| format!("42 (a) b) S 1 42 42 {tty_nr} 42 0 0").into_bytes();
        assert_eq!(tty_of_stat(&stat(136 << 8 | 3)).as_deref(), Some("pts/3"));
        assert_eq!(tty_of_stat(&stat(137 << 8 | 1)).as_deref(), Some("pts/257"));
        assert_eq!(tty_of_stat(&stat(4 << 8 | 1)).as_deref(), Some("tty1"));
        assert_eq!(tty_of_stat(&stat(4 << 8 | 64)).as_deref(), Some("ttyS0"));
        assert_eq!(tty_of_stat(&stat(0)), None);
    }

    #[test]
    fn the_ssh_client_comes_from_ssh_connection() {
        let env = b"HOME=/root\0SSH_CONNECTION=203.0.113.7 52100 192.0.2.1 22\0TERM=xterm\0";
        assert_eq!(ssh_client(env).as_deref(), Some("203.0.113.7:52100"));
        let v6 = b"SSH_CONNECTION=2001:db8::7 52100 2001:db8::1 22\0";
        assert_eq!(ssh_client(v6).as_deref(), Some("[2001:db8::7]:52100"));
        assert_eq!(ssh_client(b"SSH_CONNECTION=garbage\0"), None);
        assert_eq!(ssh_client(b"PATH=/bin\0"), None);
    }

    #[test]
    fn this_process_has_no_ssh_client_unless_its_environment_says_so() {
        let found = origin([std::process::id()]);
        assert_eq!(
            found.remote_address.is_some(),
            std::env::var_os("SSH_CONNECTION").is_some()
        );
    }
}
