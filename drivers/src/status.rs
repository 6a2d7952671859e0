//! What a [`Client`](crate::Client) can tell without asking the drive task: the connection's
//! state and who we are. The drive task writes it as things happen; handles read it.

use std::sync::{Mutex, MutexGuard, PoisonError};

use amarula_core::credentials::Credentials;
use amarula_core::machine::{CloseReason, OwnIdentity, Reconnect};

/// Where a client is ([`Client::state`](crate::Client::state)).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientState {
    /// Connecting (socket, Noise handshake, login): attempt number from 1.
    Connecting {
        /// Attempts since the client started.
        attempt: u32,
    },
    /// An unpaired device showing QR codes (or waiting for a pairing code).
    Pairing,
    /// Logged in: commands work.
    LoggedIn,
    /// The connection ended; `reconnect` says what comes next.
    Closed {
        /// Why.
        reason: CloseReason,
        /// What the client does next.
        reconnect: Reconnect,
    },
    /// The client stopped (after [`Client::stop`](crate::Client::stop), a logout, or a close
    /// without reconnect).
    Stopped,
}

impl ClientState {
    /// Whether commands can be sent now.
    pub fn is_logged_in(&self) -> bool {
        matches!(self, Self::LoggedIn)
    }
}

/// Shared between the drive task and the handles.
#[derive(Debug)]
pub(crate) struct Status {
    state: Mutex<ClientState>,
    identity: Mutex<Option<OwnIdentity>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written value: each write is one
    // assignment.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Status {
    pub(crate) fn new(creds: &Credentials) -> Self {
        Self {
            state: Mutex::new(ClientState::Connecting { attempt: 0 }),
            identity: Mutex::new(OwnIdentity::from_credentials(creds)),
        }
    }

    pub(crate) fn state(&self) -> ClientState {
        lock(&self.state).clone()
    }

    pub(crate) fn set_state(&self, state: ClientState) {
        *lock(&self.state) = state;
    }

    pub(crate) fn identity(&self) -> Option<OwnIdentity> {
        lock(&self.identity).clone()
    }

    pub(crate) fn set_credentials(&self, creds: Option<&Credentials>) {
        *lock(&self.identity) = creds.and_then(OwnIdentity::from_credentials);
    }
}
