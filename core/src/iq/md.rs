//! `xmlns="md"`: the logout of this device (SESSION.md §15).
//!
//! `<iq xmlns="md" type="set" to="s.whatsapp.net"><remove-companion-device jid=OWN
//! reason="user_initiated"/></iq>`. Only a `result` means the server removed the device; on an
//! error nothing local may be deleted (the device is still linked).

use crate::binary::Node;
use crate::jid::Jid;
use crate::machine::IqRequest;

/// Removes our own device `own` (its device JID) from the account.
pub fn remove_companion_device(own: &Jid) -> IqRequest {
    IqRequest::iq(
        "md",
        "set",
        Jid::server(),
        vec![
            Node::new("remove-companion-device")
                .attr("jid", own.clone())
                .attr("reason", "user_initiated"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let own: Jid = "1:7@s.whatsapp.net".parse().unwrap();
        let n = remove_companion_device(&own).node;
        assert_eq!(n.attr_str("xmlns"), Some("md"));
        let r = n.child("remove-companion-device").unwrap();
        assert_eq!(r.attr_jid("jid"), Some(&own));
        assert_eq!(r.attr_str("reason"), Some("user_initiated"));
    }
}
