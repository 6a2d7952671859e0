//! More of [`Account`]: what the account shows (status, picture, privacy, blocklist), its
//! groups as the server sees them, and calls rung from its phone.

use amarula_core::binary::Node;
use amarula_core::jid::Jid;
use rand_core::RngCore;

use super::account::Account;

impl Account {
    /// Sets (or clears) the account's profile picture id, as if the phone changed it.
    pub fn set_picture(&self, id: Option<&str>) {
        self.shared.lock().profile(&self.phone).picture = id.map(str::to_owned);
    }

    /// The account's about text, as set with `xmlns="status"`.
    pub fn status_text(&self) -> Option<String> {
        self.shared
            .lock()
            .profile(&self.phone)
            .status
            .as_ref()
            .map(|(t, _)| t.clone())
    }

    /// Sets one privacy setting (`groupadd`, `profile`, …), as if the phone changed it.
    pub fn set_privacy(&self, category: &str, value: &str) {
        self.shared
            .lock()
            .profile(&self.phone)
            .privacy
            .insert(category.to_owned(), value.to_owned());
    }

    /// The value of one privacy setting (the default when never set).
    pub fn privacy(&self, category: &str) -> Option<String> {
        self.shared
            .lock()
            .privacy_value(&self.phone, category)
            .map(str::to_owned)
    }

    /// The LIDs the account has blocked.
    pub fn blocked(&self) -> Vec<Jid> {
        self.shared
            .lock()
            .profile(&self.phone)
            .blocked
            .iter()
            .map(|l| Jid::lid(l.as_str()))
            .collect()
    }

    /// The admins of `group` (phone numbers; the creator first), or `None` for an unknown
    /// group.
    pub fn group_admins(&self, group: &Jid) -> Option<Vec<String>> {
        let st = self.shared.lock();
        let g = st.groups.get(group.user_part())?;
        Some(
            g.participants
                .iter()
                .filter(|p| g.is_admin(p))
                .cloned()
                .collect(),
        )
    }

    /// The subject of `group`, or `None` for an unknown group.
    pub fn group_subject(&self, group: &Jid) -> Option<String> {
        let st = self.shared.lock();
        st.groups.get(group.user_part()).map(|g| g.subject.clone())
    }

    /// This account's phone calls `callee` (a phone number): every linked companion of the
    /// callee gets `<call from=CALLER id t platform version><offer call-id call-creator
    /// caller_lid><audio/>[<video/>]</offer></call>` (queued while offline). Returns the call
    /// id.
    pub fn ring(&self, callee: &str, video: bool) -> String {
        let mut st = self.shared.lock();
        let mut raw = [0u8; 16];
        st.rng.fill_bytes(&mut raw);
        let call_id = hex::encode_upper(raw);
        let mut id = [0u8; 8];
        st.rng.fill_bytes(&mut id);
        let caller = Jid::user(self.phone.as_str());
        let lid = st
            .accounts
            .get(&self.phone)
            .map(|a| Jid::lid(a.lid.as_str()));
        let mut media = vec![Node::new("audio").attr("enc", "opus").attr("rate", "16000")];
        if video {
            media.push(Node::new("video").attr("enc", "vp8"));
        }
        let mut offer = Node::new("offer")
            .attr("call-id", call_id.as_str())
            .attr("call-creator", caller.clone());
        if let Some(lid) = lid {
            offer = offer.attr("caller_lid", lid);
        }
        let node = Node::new("call")
            .attr("from", caller)
            .attr("id", hex::encode_upper(id))
            .attr("t", super::unix_now().to_string())
            .attr("platform", "android")
            .attr("version", "2.24.0")
            .children([offer.children(media)]);
        for d in st.companion_devices(callee) {
            st.deliver(callee, d, node.clone());
        }
        call_id
    }
}
