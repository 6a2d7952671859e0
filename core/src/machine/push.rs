//! Typed pushes (group notifications and calls, [`crate::notify`]), the call reject, and our
//! own identity.

use super::{ConnectionMachine, Event, SendError};
use crate::binary::Node;
use crate::credentials::Credentials;
use crate::jid::Jid;
use crate::notify::call::{self, CallEvent};
use crate::notify::group::GroupNotification;
use crate::time::Instant;

/// Who this device is: the account's identities and the device, from the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OwnIdentity {
    /// Our phone-number user (`PHONE@s.whatsapp.net`).
    pub pn: Jid,
    /// Our LID user, once known (pairing or login).
    pub lid: Option<Jid>,
    /// This device (`PHONE:N@s.whatsapp.net`).
    pub device: Jid,
    /// Our push name, when set.
    pub push_name: Option<String>,
    /// The primary device's platform, as given at pairing.
    pub platform: String,
}

impl OwnIdentity {
    /// The identity of paired credentials; `None` before pairing.
    pub fn from_credentials(creds: &Credentials) -> Option<Self> {
        let device = creds.device.as_ref()?;
        let lid = creds
            .own_lid
            .clone()
            .or_else(|| device.lid.clone())
            .map(|l| l.to_non_device());
        Some(Self {
            pn: device.jid.to_non_device(),
            lid,
            device: device.jid.clone(),
            push_name: creds.push_name.clone(),
            platform: device.platform.clone(),
        })
    }

    /// Whether `chat` is our own chat ("message yourself"), by either identity: what the
    /// user writes there from the phone can serve as commands to this device.
    pub fn is_own_chat(&self, chat: &Jid) -> bool {
        let chat = chat.to_non_device();
        chat == self.pn || self.lid.as_ref() == Some(&chat)
    }
}

impl ConnectionMachine {
    /// The typed event for a push the machine knows (`w:gp2` notifications, calls); `None`
    /// for others, and for one that does not parse (it goes out raw).
    pub(super) fn typed_push(&self, node: &Node) -> Option<Event> {
        match &*node.tag {
            "notification" if node.attr_str("type") == Some("w:gp2") => {
                GroupNotification::from_node(node).map(|n| Event::GroupChanged(Box::new(n)))
            }
            "call" => CallEvent::from_node(node).map(|c| Event::Call(Box::new(c))),
            _ => None,
        }
    }

    /// Our identity, from the credentials; `None` before pairing.
    pub fn own_identity(&self) -> Option<OwnIdentity> {
        OwnIdentity::from_credentials(&self.creds)
    }

    /// Rejects an incoming call ([`Event::Call`]): sends `<call><reject call-id call-creator
    /// count="0"/></call>` to the caller (no answer comes). Needs a logged-in connection.
    pub fn reject_call(&mut self, now: Instant, call: &CallEvent) -> Result<(), SendError> {
        if !self.is_logged_in() {
            return Err(SendError::NotLoggedIn);
        }
        let own = self
            .own_identity()
            .map(|o| o.pn)
            .ok_or(SendError::NotLoggedIn)?;
        let id = format!("3EB0{}", self.random_hex(9));
        let node = call::reject(&id, &own, &call.from, &call.creator, &call.call_id);
        self.send_node(now, &node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::DeviceIdentity;
    use rand_core::SeedableRng;

    #[test]
    fn own_chat_by_either_identity() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let mut creds = Credentials::generate(&mut rng);
        assert!(OwnIdentity::from_credentials(&creds).is_none());
        creds.device = Some(DeviceIdentity {
            jid: "15550000001:4@s.whatsapp.net".parse().unwrap(),
            lid: Some("100000000000001:4@lid".parse().unwrap()),
            account: bytes::Bytes::new(),
            platform: "android".into(),
            business_name: None,
        });
        let own = OwnIdentity::from_credentials(&creds).unwrap();
        assert_eq!(own.pn.to_string(), "15550000001@s.whatsapp.net");
        assert!(own.is_own_chat(&"15550000001@s.whatsapp.net".parse().unwrap()));
        assert!(own.is_own_chat(&"15550000001:2@s.whatsapp.net".parse().unwrap()));
        assert!(own.is_own_chat(&"100000000000001@lid".parse().unwrap()));
        assert!(!own.is_own_chat(&"15550000002@s.whatsapp.net".parse().unwrap()));
        assert!(!own.is_own_chat(&"120363000000000001@g.us".parse().unwrap()));
    }
}
