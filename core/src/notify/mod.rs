//! Typed server pushes the machine hands out as events: group changes
//! (`<notification type="w:gp2">`, [`group`]) and calls (`<call>`, [`call`]).
//!
//! Both are acked by the machine as every notification and call is (SESSION.md §5): the typed
//! event comes first, then the `<ack>`. A push that does not parse reaches the application as
//! the raw [`Event::Stanza`](crate::machine::Event::Stanza) instead, acked the same way.

pub mod call;
pub mod group;
