//! Where a client's `<receipt>` goes (SESSION.md §6, MESSAGES.md §6), around
//! [`route::receipt`]:
//!
//! - every receipt but `read-self` / `played-self` goes to the message's sender
//!   ([`route::receipt`]: the devices `to` names, or in a group the `participant`);
//! - `read`, `read-self`, `played` and `played-self` also go to the reader's own other devices,
//!   so they learn the chat was read: `from` = the reading device and `recipient` = the chat
//!   (1:1), or `from` = the group and `participant` = the reading device;
//! - the `-self` kinds reach only the reader's own devices: the sender is not told (that is
//!   what read-receipt privacy means).

use amarula_core::binary::{AttrValue, Content, Node};
use amarula_core::jid::Jid;

use super::events::SimEvent;
use super::route;
use super::state::State;

/// Forwards a receipt of device `me`, addressed `to` (with `participant`), stamped `t`;
/// returns the events of the routing (a phone's receipts).
pub(crate) fn forward(
    st: &mut State,
    me: &Jid,
    to: &Jid,
    participant: Option<Jid>,
    receipt: &Node,
    t: &str,
) -> Vec<SimEvent> {
    let kind = receipt.attr_str("type");
    let mut events = Vec::new();
    if !matches!(kind, Some("read-self" | "played-self")) {
        events = route::receipt(st, me, to, participant, receipt, t);
    }
    if matches!(kind, Some("read" | "read-self" | "played" | "played-self")) {
        to_own_devices(st, me, to, receipt, t);
    }
    events
}

/// The copy of a read or played receipt for the reader's other companions.
fn to_own_devices(st: &mut State, me: &Jid, to: &Jid, receipt: &Node, t: &str) {
    let Some(phone) = st.phone_of(me.user_part()).map(str::to_owned) else {
        return;
    };
    let id = receipt
        .get_attr("id")
        .cloned()
        .unwrap_or_else(|| AttrValue::from(""));
    let mut copy = Node::new("receipt").attr("id", id);
    copy = if to.is_group() {
        let lid_group = st.lid_mode && st.groups.contains_key(to.user_part());
        let reader = if lid_group {
            st.to_lid(me).unwrap_or_else(|| me.clone())
        } else {
            me.clone()
        };
        copy.attr("from", to.to_non_device())
            .attr("participant", reader)
    } else {
        copy.attr("from", st.in_namespace_of(me, to))
            .attr("recipient", to.to_non_device())
    };
    if let Some(kind) = receipt.get_attr("type") {
        copy = copy.attr("type", kind.clone());
    }
    copy = copy.attr("t", t);
    if let Content::Nodes(children) = &receipt.content {
        copy = copy.children(children.clone());
    }
    for device in st.companion_devices(&phone) {
        if device != me.device() {
            st.deliver(&phone, device, copy.clone());
        }
    }
}
