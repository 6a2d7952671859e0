//! Request ids (SESSION.md §3.3): a per-connection prefix of two random bytes, `"<b0>.<b1>-"`,
//! then a counter that keeps counting across connections.

use std::fmt;

/// Names one IQ request of the application; exactly one
/// [`Event::IqResponse`](super::Event::IqResponse) follows for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Makes the wire ids of one connection.
#[derive(Clone, Debug)]
pub(crate) struct IdGen {
    prefix: String,
    counter: u64,
}

impl IdGen {
    /// A generator with the random prefix `[b0, b1]`, continuing after `counter`.
    pub(crate) fn new(prefix: [u8; 2], counter: u64) -> Self {
        Self {
            prefix: format!("{}.{}-", prefix[0], prefix[1]),
            counter,
        }
    }

    /// The next id: its counter value and its wire form.
    pub(crate) fn next(&mut self) -> (u64, String) {
        self.counter += 1;
        (self.counter, format!("{}{}", self.prefix, self.counter))
    }

    /// The last counter value handed out.
    pub(crate) fn counter(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form() {
        let mut g = IdGen::new([83, 201], 0);
        assert_eq!(g.next(), (1, "83.201-1".to_owned()));
        assert_eq!(g.next(), (2, "83.201-2".to_owned()));
        let mut g = IdGen::new([1, 2], g.counter());
        assert_eq!(g.next().1, "1.2-3");
    }
}
