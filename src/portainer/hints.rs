//! What to tell an operator when this device cannot reach a server: the cause a failed
//! connection points at, and where to look. The poll's errors and `check`'s tunnel line use it.

use std::io::ErrorKind;

/// The server a connection was for: the tunnel has a port of its own to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Portainer,
    Tunnel,
}

/// What to check when a connection failed with `kind`; `None` where the error says enough.
pub fn connect(kind: ErrorKind, server: Server) -> Option<&'static str> {
    Some(match (kind, server) {
        (ErrorKind::ConnectionRefused, Server::Portainer) => {
            "nothing accepts connections at that address as seen from this device: is Portainer running, and is its port open from here (firewall, the port Docker publishes)?"
        }
        (ErrorKind::ConnectionRefused, Server::Tunnel) => {
            "nothing accepts connections at that address as seen from this device: is Portainer running, and is its tunnel port (8000 unless changed) open from here (firewall, the port Docker publishes)?"
        }
        (ErrorKind::TimedOut, _) => {
            "no answer at all: a firewall on the way may drop the packets, or the address is not reachable from this device's network"
        }
        (ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable, _) => {
            "this device has no route to that address: check its network connection and default route"
        }
        _ => return None,
    })
}

/// What to check when the server's name does not resolve.
pub const NAME_NOT_FOUND: &str = "the name does not resolve from this device: check its DNS servers (/etc/resolv.conf), or give Portainer an address this device can resolve (Settings > Edge Compute) and use the Edge key it then shows";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_port_to_check() {
        let portainer = connect(ErrorKind::ConnectionRefused, Server::Portainer).unwrap();
        let tunnel = connect(ErrorKind::ConnectionRefused, Server::Tunnel).unwrap();
        assert!(portainer.contains("is Portainer running"));
        assert!(tunnel.contains("tunnel port (8000 unless changed)"));
        assert!(connect(ErrorKind::TimedOut, Server::Tunnel)
            .unwrap()
            .contains("firewall"));
        assert!(connect(ErrorKind::NetworkUnreachable, Server::Portainer)
            .unwrap()
            .contains("no route"));
        assert_eq!(connect(ErrorKind::InvalidData, Server::Portainer), None);
    }
}
