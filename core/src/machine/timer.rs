//! The machine's timers, kept in a table: at most one deadline per kind.

use crate::time::Instant;

/// Kinds of timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// Timers expiring at the same instant fire in this order: the IQ deadline before the
/// dead-socket check, so an unanswered keepalive ping is reported as such.
pub(crate) enum Timer {
    /// Handshake and login must finish by then.
    Handshake,
    /// Earliest IQ deadline.
    Iq,
    /// Earliest message-ack deadline.
    MessageAck,
    /// Next keepalive tick.
    Keepalive,
    /// Dead-socket check: a request went out and nothing came back.
    DeadSocket,
    /// Rotate to the next QR ref.
    Qr,
}

const COUNT: usize = 6;

impl Timer {
    const ALL: [Self; COUNT] = [
        Self::Handshake,
        Self::Iq,
        Self::MessageAck,
        Self::Keepalive,
        Self::DeadSocket,
        Self::Qr,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// One optional deadline per [`Timer`].
#[derive(Clone, Debug, Default)]
pub(crate) struct TimerTable([Option<Instant>; COUNT]);

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.0[timer.index()] = Some(at);
    }

    pub(crate) fn set_or_stop(&mut self, timer: Timer, at: Option<Instant>) {
        self.0[timer.index()] = at;
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.0[timer.index()] = None;
    }

    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.0[timer.index()].is_some()
    }

    pub(crate) fn stop_all(&mut self) {
        self.0 = [None; COUNT];
    }

    /// The earliest deadline of all.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }

    /// Timers whose deadline is at or before `now`, earliest kind first; each is stopped.
    pub(crate) fn take_expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut expired = [None; COUNT];
        for t in Timer::ALL {
            if self.0[t.index()].is_some_and(|at| at <= now) {
                self.0[t.index()] = None;
                expired[t.index()] = Some(t);
            }
        }
        expired.into_iter().flatten()
    }
}
