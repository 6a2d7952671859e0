//! Fault injection: rules that the connections consult as they go, and one-off actions sent to
//! a connection at once.
//!
//! A [`Rule`] applies to the connections its [`Target`] selects, either forever or a set number
//! of times ([`Faults::add_times`]). Anything random (which frame a [`Rule::DropChance`] drops)
//! is drawn from the connection's own generator, seeded from [`SimConfig::seed`] and the
//! connection number, so a run with the same seed and the same client behaviour is the same.
//!
//! [`SimConfig::seed`]: super::SimConfig::seed

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use super::ConnId;
use super::state::Shared;

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client to the simulator (the ClientHello is frame 1).
    ClientToServer,
    /// From the simulator to the client (the ServerHello is frame 1).
    ServerToClient,
}

/// Which connections a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// Every connection.
    Any,
    /// One connection.
    Conn(ConnId),
    /// Connections logged in as this device (from the login on; registration connections
    /// never match).
    Device(Jid),
    /// Connections of unpaired companions (registration).
    Registrations,
}

/// A standing fault.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Drop the TCP connection (no close frame) when frame `frame` (1-based, handshake frames
    /// included) in direction `dir` comes: a client frame is not processed, a server frame is
    /// not sent.
    DropAtFrame {
        /// The direction counted.
        dir: Direction,
        /// The frame number.
        frame: u64,
    },
    /// Drop the connection at each frame in `dir` with probability `per_mille`/1000 (seeded).
    DropChance {
        /// The direction.
        dir: Direction,
        /// Chance per frame, in thousandths.
        per_mille: u16,
    },
    /// Hold each frame in `dir` for `by` before it is processed or sent (order is kept).
    Delay {
        /// The direction.
        dir: Direction,
        /// How long.
        by: Duration,
    },
    /// Do not answer IQs matching both filters (`None` matches anything).
    WithholdIqReply {
        /// The IQ's `xmlns`.
        xmlns: Option<String>,
        /// The IQ's `id`.
        id: Option<String>,
    },
    /// Do not ack `<message>` stanzas with this id (`None`: any); they are still routed.
    WithholdMessageAck {
        /// The message id.
        id: Option<String>,
    },
    /// Corrupt the copy of message `id` routed to `device`: the last byte of its first `<enc>`
    /// is flipped (a MAC or signature failure at the receiver). Added one-shot by
    /// [`Faults::corrupt_delivery`]; matched against the sender's connection.
    CorruptDelivery {
        /// The message id.
        id: String,
        /// The receiving device.
        device: Jid,
    },
    /// At login, do this instead of sending `<success>` (e.g. [`Action::Failure`] or
    /// [`Action::StreamError`]); the device is not marked online.
    AtLogin(Action),
    /// Right after `<success>` (and the offline queue), do this.
    AfterLogin(Action),
}

/// Something a connection does at once, by [`Faults::inject`] or a login rule.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Send `<stream:error [code]>[child]</stream:error>` and close.
    StreamError {
        /// The `code` attribute.
        code: Option<String>,
        /// A child such as `<conflict type="replaced"/>`.
        child: Option<Node>,
    },
    /// Send `<failure reason=N/>` and close.
    Failure {
        /// The reason code.
        reason: u16,
    },
    /// Send a frame of 64 random bytes that fails the client's GCM check.
    Garbled,
    /// Send the largest frame the 3-byte length prefix can announce (2^24 − 1 random bytes,
    /// 2^24 + 2 bytes with the prefix) in one WebSocket message: a client refuses it (message
    /// size) or fails to decrypt it.
    Oversized,
    /// Send `<receipt type="retry">` for message `id`, as if device `from` could not decrypt it.
    RetryReceipt {
        /// The message id.
        id: String,
        /// The device asking.
        from: Jid,
    },
    /// Send this stanza (encrypted).
    Send(Node),
    /// Write these bytes as they are (outside the encryption), in one WebSocket message.
    Raw(Bytes),
    /// Drop the TCP connection without a close frame.
    Drop,
}

/// The id of an added rule, for [`Faults::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u64);

#[derive(Debug)]
struct Entry {
    id: RuleId,
    target: Target,
    rule: Rule,
    remaining: Option<u32>,
}

/// The rules in force.
#[derive(Debug, Default)]
pub(crate) struct RuleSet {
    next: u64,
    entries: Vec<Entry>,
}

/// What a connection tells the rules about itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnView<'a> {
    pub(crate) id: ConnId,
    pub(crate) device: Option<&'a Jid>,
    pub(crate) registration: bool,
}

impl Target {
    fn matches(&self, c: ConnView<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::Conn(id) => *id == c.id,
            Self::Device(d) => c.device.is_some_and(|x| x == d),
            Self::Registrations => c.registration,
        }
    }
}

impl RuleSet {
    /// Runs `f` over the matching rules; an entry whose `f` returned `Some` counts as fired
    /// (its remaining count drops) and the first such value is returned.
    fn fire<T>(&mut self, c: ConnView<'_>, mut f: impl FnMut(&Rule) -> Option<T>) -> Option<T> {
        let mut out = None;
        for e in &mut self.entries {
            if out.is_some() || !e.target.matches(c) || e.remaining == Some(0) {
                continue;
            }
            if let Some(v) = f(&e.rule) {
                if let Some(n) = &mut e.remaining {
                    *n -= 1;
                }
                out = Some(v);
            }
        }
        self.entries.retain(|e| e.remaining != Some(0));
        out
    }

    /// Whether to drop the connection at frame `n` in `dir`.
    pub(crate) fn drop_at(
        &mut self,
        c: ConnView<'_>,
        dir: Direction,
        n: u64,
        rng: &mut ChaCha20Rng,
    ) -> bool {
        self.fire(c, |r| match r {
            Rule::DropAtFrame { dir: d, frame } if *d == dir && *frame == n => Some(()),
            Rule::DropChance { dir: d, per_mille }
                if *d == dir && rng.next_u32() % 1000 < u32::from(*per_mille) =>
            {
                Some(())
            }
            _ => None,
        })
        .is_some()
    }

    /// The delay of a frame in `dir`.
    pub(crate) fn delay(&mut self, c: ConnView<'_>, dir: Direction) -> Option<Duration> {
        self.fire(c, |r| match r {
            Rule::Delay { dir: d, by } if *d == dir => Some(*by),
            _ => None,
        })
    }

    /// Whether to leave this IQ unanswered.
    pub(crate) fn withhold_iq(&mut self, c: ConnView<'_>, xmlns: Option<&str>, id: &str) -> bool {
        self.fire(c, |r| match r {
            Rule::WithholdIqReply { xmlns: x, id: i }
                if x.as_deref().is_none_or(|x| Some(x) == xmlns)
                    && i.as_deref().is_none_or(|i| i == id) =>
            {
                Some(())
            }
            _ => None,
        })
        .is_some()
    }

    /// Whether to leave this message unacked.
    pub(crate) fn withhold_ack(&mut self, c: ConnView<'_>, id: &str) -> bool {
        self.fire(c, |r| match r {
            Rule::WithholdMessageAck { id: i } if i.as_deref().is_none_or(|i| i == id) => Some(()),
            _ => None,
        })
        .is_some()
    }

    /// Whether to corrupt the copy of message `id` for `device`.
    pub(crate) fn corrupt(&mut self, c: ConnView<'_>, id: &str, device: &Jid) -> bool {
        self.fire(c, |r| match r {
            Rule::CorruptDelivery { id: i, device: d }
                if (i.is_empty() || i == id) && d.same_device(device) =>
            {
                Some(())
            }
            _ => None,
        })
        .is_some()
    }

    /// What replaces `<success>`, if anything.
    pub(crate) fn at_login(&mut self, c: ConnView<'_>) -> Option<Action> {
        self.fire(c, |r| match r {
            Rule::AtLogin(a) => Some(a.clone()),
            _ => None,
        })
    }

    /// What follows `<success>`.
    pub(crate) fn after_login(&mut self, c: ConnView<'_>) -> Option<Action> {
        self.fire(c, |r| match r {
            Rule::AfterLogin(a) => Some(a.clone()),
            _ => None,
        })
    }
}

/// The fault control of a [`Simulator`](super::Simulator) (cheap to clone).
#[derive(Clone)]
pub struct Faults {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults").finish_non_exhaustive()
    }
}

impl Faults {
    fn rules(&self) -> std::sync::MutexGuard<'_, RuleSet> {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a rule in force until removed.
    pub fn add(&self, target: Target, rule: Rule) -> RuleId {
        self.insert(target, rule, None)
    }

    /// Adds a rule that fires at most `times` times.
    pub fn add_times(&self, target: Target, rule: Rule, times: u32) -> RuleId {
        self.insert(target, rule, Some(times))
    }

    fn insert(&self, target: Target, rule: Rule, remaining: Option<u32>) -> RuleId {
        let mut rules = self.rules();
        rules.next += 1;
        let id = RuleId(rules.next);
        rules.entries.push(Entry {
            id,
            target,
            rule,
            remaining,
        });
        id
    }

    /// Corrupts, once, the copy of message `id` that `device` receives: the last byte of its
    /// first `<enc>` is flipped, so the receiver's MAC (or sender-key signature) check fails.
    /// A [`SimEvent::FaultFired`](super::SimEvent::FaultFired) on the sender's connection
    /// reports it. Works for the phone (device 0) too, which then reports
    /// [`SimEvent::PhoneUndecryptable`](super::SimEvent::PhoneUndecryptable).
    pub fn corrupt_delivery(&self, id: &str, device: Jid) -> RuleId {
        self.add_times(
            Target::Any,
            Rule::CorruptDelivery {
                id: id.to_owned(),
                device,
            },
            1,
        )
    }

    /// Like [`corrupt_delivery`](Self::corrupt_delivery) for the next encrypted message that
    /// reaches `device`, whatever its id.
    pub fn corrupt_next_delivery(&self, device: Jid) -> RuleId {
        self.corrupt_delivery("", device)
    }

    /// Does `action` on the live connection of `device`; false when it is not connected.
    pub fn inject_device(&self, device: &Jid, action: Action) -> bool {
        let conn = {
            let mut st = self.shared.lock();
            st.account_by_user(device.user_part())
                .and_then(|a| a.devices.get(&device.device()))
                .and_then(|d| d.conn)
        };
        conn.is_some_and(|c| self.inject(c, action))
    }

    /// Removes a rule (no effect when it already ran out).
    pub fn remove(&self, id: RuleId) {
        self.rules().entries.retain(|e| e.id != id);
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules().entries.clear();
    }

    /// Has connection `conn` do `action` now. Returns false when the connection is gone.
    pub fn inject(&self, conn: ConnId, action: Action) -> bool {
        self.shared
            .command(conn, super::state::Command::Inject(action))
    }
}
