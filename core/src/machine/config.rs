//! Settings of the connection machine. Every default is the value SESSION.md recommends.

use std::time::Duration;

use crate::noise::TrustAnchor;
use crate::pairing::ClientConfig;

/// Settings of a [`ConnectionMachine`](super::ConnectionMachine).
#[derive(Clone, Debug)]
pub struct Config {
    /// What the ClientPayload says about this client (version, OS, platform, push name).
    pub client: ClientConfig,
    /// Root key the server certificate chain must lead to. Production code keeps the default,
    /// the pinned WhatsApp root; tests and the simulator use their own.
    pub trust: TrustAnchor,
    /// How long the handshake and login may take, from the first frame to `<success>` or the
    /// pairing IQ (20 s, as both reference clients).
    pub handshake_timeout: Duration,
    /// Default IQ timeout (75 s, SESSION.md §3.4); [`IqRequest::timeout`](super::IqRequest)
    /// overrides it per request.
    pub iq_timeout: Duration,
    /// How long a sent `<message>` waits for the server's `<ack>` (75 s, §5.5).
    pub message_ack_timeout: Duration,
    /// Keepalive pings are sent at a random interval in this range (15–30 s, §4).
    pub keepalive_interval: (Duration, Duration),
    /// No ping is sent when something was received this recently (15 s).
    pub keepalive_idle: Duration,
    /// A keepalive ping that gets no answer in this time, with nothing else received either,
    /// means the server is silent (20 s).
    pub keepalive_timeout: Duration,
    /// Dead-socket rule: a request was sent and nothing at all was received for this long
    /// (20 s).
    pub dead_socket_timeout: Duration,
    /// How long the first QR ref is shown (60 s, PAIRING.md §2.3).
    pub qr_first_ttl: Duration,
    /// How long each following QR ref is shown (20 s).
    pub qr_next_ttl: Duration,
    /// Entries kept in the sent-message cache for retry receipts (default 512, as BL).
    pub retry_cache_size: usize,
    /// Age after which a sent message no longer answers retry receipts (default 15 min).
    pub retry_cache_age: Duration,
    /// Retry receipts answered per message and requesting device (5, §7.2).
    pub max_retries: u8,
    /// Whether acks of incoming messages wait for the application's confirmation
    /// ([`ConnectionMachine::confirm`](super::ConnectionMachine::confirm)); when false the
    /// machine acks right after emitting the stanza.
    pub hold_message_acks: bool,
    /// Most unconfirmed incoming messages held at once; past it the oldest is forgotten (not
    /// acked, so the server delivers it again on the next connection).
    pub max_held_acks: usize,
    /// Most IQs (and, separately, relayed messages) waiting for an answer at once; past it the
    /// command fails with [`SendError::TooManyPending`](super::SendError::TooManyPending).
    pub max_pending_iqs: usize,
    /// Largest inflated size of a compressed frame.
    pub max_inflated: usize,
    /// Upper bound of the reconnect backoff (900 s).
    pub max_backoff: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            client: ClientConfig::default(),
            trust: TrustAnchor::WHATSAPP,
            handshake_timeout: Duration::from_secs(20),
            iq_timeout: Duration::from_secs(75),
            message_ack_timeout: Duration::from_secs(75),
            keepalive_interval: (Duration::from_secs(15), Duration::from_secs(30)),
            keepalive_idle: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(20),
            dead_socket_timeout: Duration::from_secs(20),
            qr_first_ttl: Duration::from_secs(60),
            qr_next_ttl: Duration::from_secs(20),
            retry_cache_size: 512,
            retry_cache_age: Duration::from_secs(15 * 60),
            max_retries: 5,
            hold_message_acks: true,
            max_held_acks: 4096,
            max_pending_iqs: 4096,
            max_inflated: crate::binary::DEFAULT_MAX_INFLATED,
            max_backoff: Duration::from_secs(900),
        }
    }
}
