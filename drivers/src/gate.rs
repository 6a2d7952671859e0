//! How many clients may connect and log in at the same time.
//!
//! A login is the costly part of a connection's life: the Noise handshake, and on a first
//! login hundreds of new prekey pairs generated, stored and uploaded. Started all at once by
//! thousands of clients of one process, logins queue for the CPU past the handshake and
//! keepalive timeouts, fail, and start again from nothing: the process stays saturated and
//! few accounts ever get in. Clients sharing a [`LoginGate`] take a slot before they open
//! the socket (before the machine's handshake timer starts) and give it back once the login
//! and the prekey work after it are done, or the connection ends, so the logins that run get
//! the CPU and finish in time while the others wait without a timer.

use std::sync::OnceLock;

/// Slots of the process-wide gate every client shares unless its configuration names
/// another ([`ClientConfig::login_gate`](crate::ClientConfig::login_gate)).
pub const DEFAULT_CONCURRENT_LOGINS: usize = 64;

/// A bound on concurrent logins, shared by the clients given clones of it. Runtime-neutral
/// (the tokio and the smol driver wait on it alike).
#[derive(Clone)]
pub struct LoginGate {
    give: async_channel::Sender<()>,
    take: async_channel::Receiver<()>,
}

impl std::fmt::Debug for LoginGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginGate")
            .field("free", &self.take.len())
            .finish_non_exhaustive()
    }
}

impl LoginGate {
    /// A gate letting `slots` logins run at once (at least one).
    #[must_use]
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let (give, take) = async_channel::bounded(slots);
        for _ in 0..slots {
            // The channel holds exactly `slots` tokens.
            let _ = give.try_send(());
        }
        Self { give, take }
    }

    /// The process-wide gate ([`DEFAULT_CONCURRENT_LOGINS`] slots).
    #[must_use]
    pub fn shared() -> Self {
        static SHARED: OnceLock<LoginGate> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::new(DEFAULT_CONCURRENT_LOGINS))
            .clone()
    }

    /// Waits for a free slot; it is given back when the [`LoginSlot`] drops.
    pub(crate) async fn enter(&self) -> LoginSlot {
        // The gate holds its own sender, so the channel never closes.
        let _ = self.take.recv().await;
        LoginSlot {
            give: self.give.clone(),
        }
    }
}

/// One running login's slot in a [`LoginGate`].
pub(crate) struct LoginSlot {
    give: async_channel::Sender<()>,
}

impl Drop for LoginSlot {
    fn drop(&mut self) {
        // A slot taken from this gate always has room to go back.
        let _ = self.give.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        smol::block_on(async {
            let gate = LoginGate::new(2);
            let a = gate.enter().await;
            let _b = gate.enter().await;
            assert_eq!(gate.take.len(), 0);
            let mut third = std::pin::pin!(gate.enter());
            let waker = futures_util::task::noop_waker();
            let mut cx = std::task::Context::from_waker(&waker);
            assert!(third.as_mut().poll(&mut cx).is_pending());
            drop(a);
            assert!(third.as_mut().poll(&mut cx).is_ready());
        });
    }

    #[test]
    fn zero_slots_means_one() {
        let gate = LoginGate::new(0);
        assert_eq!(gate.take.len(), 1);
    }
}
