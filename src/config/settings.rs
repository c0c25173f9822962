//! The settings table ([`VARS`]): every setting the agent reads, with its environment name, its
//! CLI flag, its default and a line of help.

/// One setting: its environment name, its CLI flag (the Go agent's where it has one), its default
/// and a line of help.
#[derive(Debug)]
pub struct Var {
    pub env: &'static str,
    pub flag: &'static str,
    pub default: &'static str,
    pub help: &'static str,
}

impl Var {
    /// A switch: `--flag` alone means true, `--no-flag` false.
    pub fn is_bool(&self) -> bool {
        matches!(
            self.env,
            "EDGE_INSECURE_POLL"
                | "EDGE_TUNNEL"
                | "EDGE_HOST_BROWSER"
                | "EDGE_CONNECTIVITY_CHECK"
                | "EDGE_SETUP_PAGE"
        )
    }
}

pub const VARS: &[Var] = &[
    Var {
        env: "EDGE_KEY",
        flag: "edge-key",
        default: "",
        help: "Edge key shown by Portainer for this environment (required at first boot)",
    },
    Var {
        env: "EDGE_ID",
        flag: "edge-id",
        default: "",
        help: "Edge ID; generated once and kept in the state file when unset",
    },
    Var {
        env: "EDGE_SETUP_PAGE",
        flag: "setup-page",
        default: "false",
        help: "without an Edge key, serve a page where anyone on the network can enter one, for 15 minutes",
    },
    Var {
        env: "EDGE_SERVER_HOST",
        flag: "edge-host",
        default: "0.0.0.0",
        help: "IP address the setup page listens on",
    },
    Var {
        env: "EDGE_SERVER_PORT",
        flag: "edge-port",
        default: "80",
        help: "TCP port the setup page listens on",
    },
    Var {
        env: "EDGE_INSECURE_POLL",
        flag: "edge-insecurepoll",
        default: "false",
        help: "accept a self-signed Portainer certificate when polling",
    },
    Var {
        env: "EDGE_INACTIVITY_TIMEOUT",
        flag: "edge-inactivity",
        default: "5m",
        help: "close the tunnel after this much inactivity (Go duration)",
    },
    Var {
        env: "EDGE_TUNNEL",
        flag: "edge-tunnel",
        default: "true",
        help: "open the reverse tunnel when Portainer asks",
    },
    Var {
        env: "EDGE_HOST_BROWSER",
        flag: "host-browser",
        default: "true",
        help: "let Portainer browse, download and change any file of the host (volumes are always browsable)",
    },
    Var {
        env: "EDGE_UPLOAD_MAX",
        flag: "upload-max",
        default: "1G",
        help: "largest file Portainer may upload to a volume or the host (bytes, or K, M, G)",
    },
    Var {
        env: "AGENT_SECRET",
        flag: "secret",
        default: "",
        help: "shared secret, must equal Portainer's AGENT_SECRET",
    },
    Var {
        env: "LOG_LEVEL",
        flag: "log-level",
        default: "INFO",
        help: "ERROR, WARN, INFO or DEBUG",
    },
    Var {
        env: "DATA_PATH",
        flag: "data",
        default: "/var/lib/edge-agent",
        help: "folder of the state file",
    },
    Var {
        env: "HTTP_PROXY",
        flag: "http-proxy",
        default: "",
        help: "proxy for http:// Portainer URLs",
    },
    Var {
        env: "HTTPS_PROXY",
        flag: "https-proxy",
        default: "",
        help: "proxy for https:// Portainer URLs",
    },
    Var {
        env: "NO_PROXY",
        flag: "no-proxy",
        default: "",
        help: "comma-separated hosts or domains reached without proxy",
    },
    Var {
        env: "MTLS_SSL_CERT",
        flag: "mtlscert",
        default: "",
        help: "client certificate (PEM) for mTLS polling",
    },
    Var {
        env: "MTLS_SSL_KEY",
        flag: "mtlskey",
        default: "",
        help: "client private key (PEM) for mTLS polling",
    },
    Var {
        env: "MTLS_SSL_CA",
        flag: "mtlscacert",
        default: "",
        help: "CA certificate(s) (PEM) trusted for the Portainer server",
    },
    Var {
        env: "DOCKER_HOST",
        flag: "docker-host",
        default: "unix:///var/run/docker.sock",
        help: "Docker Engine socket (unix:// only)",
    },
    Var {
        env: "EDGE_GROUPS",
        flag: "edge-groups",
        default: "",
        help: "colon-separated Edge group ids (sent with a global key)",
    },
    Var {
        env: "PORTAINER_GROUP",
        flag: "environment-group",
        default: "",
        help: "environment group id (sent with a global key)",
    },
    Var {
        env: "PORTAINER_TAGS",
        flag: "tags",
        default: "",
        help: "colon-separated tag ids (sent with a global key)",
    },
    Var {
        env: "EDGE_CONNECTIVITY_CHECK",
        flag: "connectivity-check",
        default: "false",
        help: "check once that the Portainer URL and the tunnel server answer, print PASS/FAIL lines and exit",
    },
    Var {
        env: "EDGE_CONNECTIVITY_CHECK_URL",
        flag: "connectivity-check-url",
        default: "",
        help: "Portainer URL the connectivity check tries (default: the Edge key's)",
    },
    Var {
        env: "EDGE_CONNECTIVITY_CHECK_TUNNEL_ADDR",
        flag: "connectivity-check-tunnel-addr",
        default: "",
        help: "tunnel server address the connectivity check tries (default: the Edge key's)",
    },
    Var {
        env: "EDGE_CONNECTIVITY_CHECK_TIMEOUT",
        flag: "connectivity-check-timeout",
        default: "15s",
        help: "how long the connectivity check waits for each answer (Go duration)",
    },
];

/// The default of the setting named `name` (empty for an unknown name).
pub(super) fn default_of(name: &str) -> &'static str {
    VARS.iter()
        .find(|v| v.env == name)
        .map(|v| v.default)
        .unwrap_or("")
}
