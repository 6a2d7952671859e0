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
    /// Whether the machine handles end-to-end encryption itself (on by default): it keeps the
    /// server's prekey supply up at login, decrypts incoming `<message>` stanzas into
    /// [`Event::Message`](super::Event::Message) and answers retry receipts for what it sent.
    /// Off, encrypted stanzas reach the application as raw [`Event::Stanza`](super::Event)
    /// and nothing is sent unasked (for a layer of the application's own, or to test the
    /// connection alone). [`send_text`](super::ConnectionMachine::send_text) works either way.
    pub end_to_end: bool,
    /// One-time prekeys uploaded when the server has none (812, SESSION.md §10.1).
    pub prekey_upload_count: u32,
    /// One-time prekeys uploaded when the server's supply runs low (50, as WA Web).
    pub prekey_refill_count: u32,
    /// The most one-time prekeys one upload IQ carries (100; whatsmeow uploads 50 per IQ). A
    /// larger upload (the first login's 812) goes as several IQs, one after another: each
    /// batch is generated, persisted and sent once the one before it is answered. A first
    /// login then never holds its 812 key pairs, their records, the upload's node tree and its
    /// 40 KiB frame at once: that megabyte of short-lived memory per login, in a process
    /// logging thousands of accounts in, is what the allocator keeps afterwards.
    pub prekey_upload_batch: u32,
    /// The server count below which prekeys are refilled (5, SESSION.md §10.2).
    pub prekey_min_count: u32,
    /// How long a fetched device list is used before it is fetched again (1 h); a `devices`
    /// notification for the user drops it at once.
    pub device_list_ttl: Duration,
    /// Signal records of each kind (sessions, sender keys, device lists, prekeys) kept in
    /// memory; past it the least recently loaded are dropped (the store has them) (4096).
    pub max_loaded_records: usize,
    /// Sends waiting for device lists, prekey bundles or stored records (1024).
    pub max_pending_sends: usize,
    /// Incoming encrypted messages waiting for stored records (1024); past it a message is
    /// left unacked, and the server delivers it again on the next connection.
    pub max_parked_messages: usize,
    /// Retry receipts sent for one undecryptable message at most (SESSION.md §7.1: WA Web
    /// stops when the count reaches 5, so 4).
    pub max_decrypt_retries: u8,
    /// History sync: the largest inflated history chunk accepted (default
    /// [`history::DEFAULT_MAX_INFLATED`](crate::history::DEFAULT_MAX_INFLATED)); a larger
    /// one is refused and reported.
    pub max_history_inflated: usize,
    /// History sync: most messages in one [`Event::HistorySync`](super::Event) part
    /// (default 1000).
    pub history_batch_messages: usize,
    /// History sync: how old (by the notification's own time) a chunk that cannot be had or
    /// read may be before it is given up: acknowledged, forgotten and reported with
    /// `gave_up` (default one day). A younger one is left unacknowledged, so it comes again
    /// after a restart, when a blob host or the network may be back. `Duration::ZERO` gives
    /// up at the first failure.
    pub history_give_up_after: Duration,
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
            end_to_end: true,
            prekey_upload_count: 812,
            prekey_upload_batch: 100,
            prekey_refill_count: 50,
            prekey_min_count: 5,
            device_list_ttl: Duration::from_secs(3600),
            max_loaded_records: 4096,
            max_pending_sends: 1024,
            max_parked_messages: 1024,
            max_decrypt_retries: 4,
            max_history_inflated: crate::history::DEFAULT_MAX_INFLATED,
            history_batch_messages: 1000,
            history_give_up_after: Duration::from_secs(24 * 60 * 60),
        }
    }
}
