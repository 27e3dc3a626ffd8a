//! [`ServerUrl`]: where a Confab server is, for HTTP (§5) and WebSocket (§3.1).

use std::fmt;
use std::str::FromStr;

/// The base URL of a Confab server, `http://host:port` or `https://host:port`,
/// optionally with a path prefix (`https://example.com/chat`, a server behind
/// a reverse proxy that forwards `/chat/v1/...`).
///
/// The HTTP endpoints (§5) hang off it, and the WebSocket endpoint (§3.1) is
/// derived from it: `ws://host:port/v1/ws` for `http`, `wss://host:port/v1/ws`
/// for `https`. A missing port means 80 or 443.
///
/// ```
/// use confab_bot_sdk::ServerUrl;
///
/// let url: ServerUrl = "http://127.0.0.1:7420".parse().unwrap();
/// assert_eq!(url.ws_url(), "ws://127.0.0.1:7420/v1/ws");
/// assert_eq!(url.http_url("/v1/login"), "http://127.0.0.1:7420/v1/login");
/// assert!("ftp://example.com".parse::<ServerUrl>().is_err());
///
/// let proxied: ServerUrl = "https://example.com/chat/".parse().unwrap();
/// assert_eq!(proxied.ws_url(), "wss://example.com:443/chat/v1/ws");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUrl {
    tls: bool,
    host: String,
    port: u16,
    /// Path prefix without a trailing slash, "" for none.
    prefix: String,
}

/// Why a string is not a [`ServerUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server URL {input:?}: {reason}; expected http://host:port or https://host:port")]
pub struct InvalidServerUrl {
    input: String,
    reason: &'static str,
}

impl ServerUrl {
    /// Parses `http(s)://host[:port][/prefix][/]`.
    pub fn parse(input: &str) -> Result<Self, InvalidServerUrl> {
        let invalid = |reason| InvalidServerUrl {
            input: input.to_owned(),
            reason,
        };
        let uri: http::Uri = input.trim().parse().map_err(|_| invalid("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(invalid("the scheme must be http or https")),
            None => return Err(invalid("the scheme is missing")),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("the host is missing"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("credentials do not belong in the URL"));
        }
        if uri.query().is_some() {
            return Err(invalid("the URL must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/');
        // `/v1/...` is where the endpoints start: a URL naming one of them
        // was meant as the base, and would double the path if taken as a prefix.
        if prefix.split('/').nth(1) == Some("v1") {
            return Err(invalid(
                "the URL names an endpoint; give the server's base URL, without /v1",
            ));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        // `http::Uri` takes `host:text` with a port it cannot read as no
        // port at all; a typo there must not silently mean port 80.
        let port_text = authority
            .as_str()
            .rsplit_once(':')
            .map(|(_, port)| port)
            .filter(|port| !port.contains(']'));
        let port = match port_text {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(port) => port
                .parse()
                .map_err(|_| invalid("the port is not a number from 0 to 65535"))?,
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
            prefix: prefix.to_owned(),
        })
    }

    /// Whether the server is reached over TLS (`https`, `wss`).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or IP address (IPv6 addresses in brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path prefix without a trailing slash, "" for none.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The URL of an HTTP endpoint, e.g. `http_url("/v1/login")`.
    pub fn http_url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{scheme}://{}:{}{}{path}",
            self.host, self.port, self.prefix
        )
    }

    /// The request target of an HTTP endpoint: the prefix and `path`.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    /// The WebSocket endpoint (§3.1), e.g. `ws://127.0.0.1:7420/v1/ws`.
    pub fn ws_url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://{}:{}{}{}",
            self.host,
            self.port,
            self.prefix,
            confab_protocol::WEBSOCKET_PATH
        )
    }

    /// `host:port`, as used in the `Host` header and to connect.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The host without IPv6 brackets, for DNS and TLS server names.
    pub(crate) fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl FromStr for ServerUrl {
    type Err = InvalidServerUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.http_url(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_derives() {
        let cases = [
            ("http://localhost:7420", "ws://localhost:7420/v1/ws"),
            ("http://localhost:7420/", "ws://localhost:7420/v1/ws"),
            (
                "https://chat.example.com",
                "wss://chat.example.com:443/v1/ws",
            ),
            ("http://[::1]:9", "ws://[::1]:9/v1/ws"),
            ("http://localhost/chat/", "ws://localhost:80/chat/v1/ws"),
        ];
        for (input, ws) in cases {
            assert_eq!(ServerUrl::parse(input).unwrap().ws_url(), ws, "{input}");
        }
        assert_eq!(
            ServerUrl::parse("http://[::1]:9").unwrap().bare_host(),
            "::1"
        );
    }

    #[test]
    fn rejects() {
        for input in [
            "localhost:7420",
            "ws://localhost:7420",
            "http://localhost:7420/v1",
            "http://localhost:7420/v1/ws",
            "http://localhost:7420/?a=b",
            "http://x:port",
            "http://user:pw@localhost",
            "http://",
            "",
        ] {
            assert!(ServerUrl::parse(input).is_err(), "{input}");
        }
    }
}
