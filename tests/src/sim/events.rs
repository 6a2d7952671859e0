//! What the simulator tells tests: [`SimEvent`]s on a broadcast channel, and a
//! [`Subscription`] that waits for one with a time bound instead of sleeping.

use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use tokio::sync::broadcast;

use super::ConnId;

/// What kind of connection a handshake opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnKind {
    /// A registration (an unpaired companion): the pair-device IQ was sent.
    Registration,
    /// A login of a registered device: `<success>` was sent (or the login fault that replaced it).
    Login {
        /// The device that logged in.
        device: Jid,
    },
    /// A login refused with `<failure reason="401">`: unknown device or wrong Noise key.
    LoginRefused {
        /// The device the ClientPayload claimed to be.
        device: Option<Jid>,
    },
}

/// Something that happened in the simulator.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SimEvent {
    /// A client completed the Noise handshake.
    ConnectionOpened {
        /// The connection.
        conn: ConnId,
        /// What the ClientPayload asked for, and what the server answered.
        kind: ConnKind,
    },
    /// A stanza arrived from a client (after the handshake), before the server handled it.
    StanzaReceived {
        /// The connection.
        conn: ConnId,
        /// The logged-in device, if any.
        device: Option<Jid>,
        /// The stanza.
        node: Node,
    },
    /// A companion asked for phone-code pairing (`companion_hello`); the phone can now
    /// [`enter_code`](super::Account::enter_code).
    PairingCodeRequested {
        /// The connection.
        conn: ConnId,
        /// The phone number it named.
        phone: String,
    },
    /// A companion answered the pair-success with a valid `pair-device-sign` and was registered.
    Paired {
        /// The connection (closed right after with stream error 515).
        conn: ConnId,
        /// The new device JID.
        device: Jid,
    },
    /// A message was acked to its sender and handed to the recipient's devices.
    MessageRouted {
        /// The message id.
        id: String,
        /// The sending device.
        from: Jid,
        /// Devices it was sent to at once.
        delivered: Vec<Jid>,
        /// Devices it was queued for (offline).
        queued: Vec<Jid>,
    },
    /// A message was refused: the server's ack to its sender carries `error` (LID.md §3.5:
    /// 400 mixed namespaces, 463 no privacy token, 479 unroutable). Comes just before the
    /// message's [`MessageRouted`](Self::MessageRouted), which names no device then.
    MessageRefused {
        /// The message id.
        id: String,
        /// The sending device.
        from: Jid,
        /// The ack's `error`.
        error: String,
    },
    /// A new login of a device was handed again, with `offline="1"` before its offline queue,
    /// the messages earlier connections of the device were given and never acknowledged (by an
    /// ack or a delivery receipt).
    Redelivered {
        /// The new connection.
        conn: ConnId,
        /// The device that logged in.
        device: Jid,
        /// The ids of the messages, in the order they are sent.
        ids: Vec<String>,
    },
    /// A copy routed to an account's phone (device 0) decrypted to a message with content
    /// (one event per such `<enc>`; a message carrying only a sender-key distribution gives
    /// none).
    PhoneMessage {
        /// The phone number of the account.
        account: String,
        /// The sending device.
        from: Jid,
        /// The chat: the group, the sender's user, or (for a message from another device of
        /// the same account) the chat it was sent in.
        chat: Jid,
        /// The message id.
        id: String,
        /// The decrypted message (unpadded, `deviceSentMessage` unwrapped).
        message: Box<amarula_proto::e2e::Message>,
    },
    /// An `<enc>` of a copy routed to an account's phone did not decrypt (or its plaintext did
    /// not unpad or decode).
    PhoneUndecryptable {
        /// The phone number of the account.
        account: String,
        /// The sending device.
        from: Jid,
        /// The message id.
        id: String,
        /// What went wrong, in words.
        error: String,
    },
    /// A receipt for a message an account's phone sent reached the phone (a delivery receipt
    /// has no `kind`; `read`, `played`, … otherwise).
    PhoneReceipt {
        /// The phone number of the account.
        account: String,
        /// The device that sent the receipt.
        from: Jid,
        /// The message id.
        id: String,
        /// The receipt's `type`, when it has one.
        kind: Option<String>,
    },
    /// A fault rule or an injected action fired.
    FaultFired {
        /// The connection.
        conn: ConnId,
        /// A short description.
        what: String,
    },
    /// A connection ended.
    ConnectionClosed {
        /// The connection.
        conn: ConnId,
        /// Why, in words.
        reason: String,
    },
}

/// Why [`Subscription::wait_for`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The time bound passed.
    #[error("timed out waiting for a simulator event")]
    Timeout,
    /// The simulator shut down.
    #[error("simulator closed")]
    Closed,
}

/// A stream of [`SimEvent`]s from the moment of [`Simulator::subscribe`](super::Simulator::subscribe).
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<SimEvent>,
}

impl Subscription {
    pub(crate) fn new(rx: broadcast::Receiver<SimEvent>) -> Self {
        Self { rx }
    }

    /// The next event, or `None` once the simulator is gone. Events missed because the
    /// subscriber lagged more than the channel capacity behind are skipped (with a warning).
    pub async fn next(&mut self) -> Option<SimEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "simulator subscriber lagged");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Waits at most `within` for the first event `pred` maps to `Some`, and returns that value.
    /// Events before it are consumed.
    pub async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&SimEvent) -> Option<T>,
    ) -> Result<T, WaitError> {
        let fut = async {
            while let Some(e) = self.next().await {
                if let Some(t) = pred(&e) {
                    return Ok(t);
                }
            }
            Err(WaitError::Closed)
        };
        tokio::time::timeout(within, fut)
            .await
            .unwrap_or(Err(WaitError::Timeout))
    }
}
