//! The `media_conn` IQ (SESSION.md §12.1): the hosts files are uploaded to and downloaded from,
//! and the upload auth token, valid for `ttl` seconds.

use std::time::Duration;

use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::IqRequest;
use crate::time::Instant;

/// One media host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaHost {
    /// The host name (`mmg.whatsapp.net`).
    pub hostname: String,
    /// The largest upload it takes, when it says.
    pub max_content_length: Option<u64>,
}

/// The answer to `media_conn`: where and how to transfer media.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MediaConn {
    /// The upload auth token.
    pub auth: String,
    /// The hosts, in the order to try them.
    pub hosts: Vec<MediaHost>,
    /// How long the answer stays valid.
    pub ttl: Duration,
    /// How long the auth token stays valid, when given.
    pub auth_ttl: Option<Duration>,
    /// When it was fetched.
    pub fetched_at: Instant,
}

impl std::fmt::Debug for MediaConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth token allows uploads to the account's name: kept out of logs.
        f.debug_struct("MediaConn")
            .field("hosts", &self.hosts)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl MediaConn {
    /// Whether it can still be used at `now` (the shorter of `ttl` and `auth_ttl`).
    pub fn is_fresh(&self, now: Instant) -> bool {
        let ttl = self.auth_ttl.map_or(self.ttl, |a| a.min(self.ttl));
        now.saturating_duration_since(self.fetched_at) < ttl
    }
}

/// Why a `media_conn` answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaConnError {
    /// No `<media_conn>` child.
    #[error("media_conn answer without <media_conn>")]
    Missing,
    /// No `auth` attribute.
    #[error("media_conn without auth")]
    NoAuth,
    /// No host.
    #[error("media_conn without hosts")]
    NoHosts,
}

/// The request: `<iq xmlns="w:m" type="set" to="s.whatsapp.net"><media_conn/></iq>`.
pub fn media_conn_request() -> IqRequest {
    IqRequest::iq("w:m", "set", Jid::server(), vec![Node::new("media_conn")])
}

/// Reads the answer (the IQ result node), fetched at `now`.
pub fn parse_media_conn(result: &Node, now: Instant) -> Result<MediaConn, MediaConnError> {
    let conn = if result.tag == "media_conn" {
        result
    } else {
        result.child("media_conn").ok_or(MediaConnError::Missing)?
    };
    let auth = conn
        .attr_str("auth")
        .filter(|a| !a.is_empty())
        .ok_or(MediaConnError::NoAuth)?
        .to_owned();
    let secs = |k: &str| conn.attr_str(k).and_then(|v| v.parse::<u64>().ok());
    let hosts: Vec<MediaHost> = conn
        .child_nodes()
        .iter()
        .filter(|h| h.tag == "host")
        .filter_map(|h| {
            let hostname = h.attr_str("hostname").filter(|n| valid_host(n))?;
            Some(MediaHost {
                hostname: hostname.to_owned(),
                max_content_length: h
                    .attr_str("maxContentLengthBytes")
                    .and_then(|v| v.parse().ok()),
            })
        })
        .collect();
    if hosts.is_empty() {
        return Err(MediaConnError::NoHosts);
    }
    Ok(MediaConn {
        auth,
        hosts,
        // A missing or zero ttl: good for this one use only.
        ttl: Duration::from_secs(secs("ttl").unwrap_or(0)),
        auth_ttl: secs("auth_ttl").map(Duration::from_secs),
        fetched_at: now,
    })
}

/// A host name (with an optional port) that is safe to put in a URL: no scheme, path, user
/// info or spaces from the wire.
fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}
