//! LID addressing (LID.md): which user a LID and a phone number (PN) JID name, learned from
//! every source that tells and loaded from the store like sessions; the Signal address a
//! device's state lives under (the LID device whenever the mapping is known); and the one-time
//! move of a contact's state from its PN address to its LID address.
//!
//! Rules (see `docs/protocol-notes.md`, "LID addressing and privacy tokens"):
//! - a mapping is per user; device numbers are the same in both namespaces;
//! - the Signal address of a PN device whose user has a known LID is the LID device with the
//!   same number; a LID device is its own address;
//! - the first time a PN device is used under its LID address while only the PN address holds
//!   state, the session (with the identity it carries) and the sender keys move over, the
//!   changes leaving as one consecutive run of persistence events (one store batch).

use super::nodes::{device_address, user_of};
use super::records::Lookup;
use super::{LoadBatch, Messaging};
use crate::jid::Jid;
use crate::machine::ConnectionMachine;
use crate::persist::Change;

/// Whether a JID is a regular user that may have an identity in the other namespace.
fn mappable(jid: &Jid) -> bool {
    !jid.user_part().is_empty()
        && matches!(
            jid.server_part(),
            crate::jid::Server::User | crate::jid::Server::Lid
        )
}

/// `device`'s number on the user `other` (device numbers are shared by both identities).
pub(crate) fn same_device_on(other: &Jid, device: &Jid) -> Jid {
    user_of(other).with_device(device.device())
}

/// Whether a pair-success IQ's `<client-props>` (`ClientPairingProps`) says the account's
/// chat database is LID-migrated (LID.md §3.1).
pub(crate) fn pair_props_lid_migrated(iq: &crate::binary::Node) -> bool {
    use prost::Message as _;
    iq.child("pair-success")
        .and_then(|p| p.child("client-props"))
        .and_then(|c| c.content_bytes())
        .and_then(|b| {
            amarula_proto::generated::wa_companion_reg::ClientPairingProps::decode(b).ok()
        })
        .and_then(|p| p.is_chat_db_lid_migrated)
        .unwrap_or(false)
}

impl Messaging {
    /// The other identity of `user` when held in memory.
    pub(crate) fn alt_user(&self, user: &Jid) -> Option<Jid> {
        match self.lids.lookup(&user_of(user)) {
            Lookup::Held(j) => Some(j.clone()),
            _ => None,
        }
    }

    /// Whether the mapping of `user` is settled (held, or known to be absent); asks the store
    /// otherwise.
    pub(super) fn lid_known(&mut self, user: &Jid, loads: &mut LoadBatch) -> bool {
        let user = user_of(user);
        if !mappable(&user) || self.lids.is_known(&user) {
            return true;
        }
        loads.lid_mapping(self, &user);
        false
    }

    /// The Signal address of `device`: its LID device when the mapping is held, else itself.
    pub(crate) fn signal_address(&self, device: &Jid) -> Jid {
        let device = device_address(device);
        if device.is_lid() {
            return device;
        }
        match self.alt_user(&device) {
            Some(lid) if lid.is_lid() => same_device_on(&lid, &device),
            _ => device,
        }
    }

    /// The JID of `jid` in the LID namespace when known (device kept), else `jid`.
    pub(crate) fn to_lid(&self, jid: &Jid) -> Jid {
        if jid.is_lid() {
            return jid.clone();
        }
        match self.alt_user(jid) {
            Some(lid) if lid.is_lid() => match jid.explicit_device() {
                Some(d) => user_of(&lid).with_device(d),
                None => user_of(&lid),
            },
            _ => jid.clone(),
        }
    }

    /// Moves the session of `pn_device` to `lid_device` in memory when only the PN address
    /// holds one; the changes to persist, in order.
    pub(crate) fn migrate_session(
        &mut self,
        pn_device: &Jid,
        lid_device: &Jid,
        cap: usize,
    ) -> Vec<Change> {
        if !matches!(self.sessions.lookup(lid_device), Lookup::Absent) {
            return Vec::new();
        }
        let Lookup::Held(record) = self.sessions.lookup(pn_device) else {
            return Vec::new();
        };
        let record = record.clone();
        let identity = record.remote_identity();
        let bytes = record.to_bytes().to_vec();
        self.sessions.put(lid_device.clone(), Some(record), cap);
        self.sessions.put(pn_device.clone(), None, cap);
        tracing::debug!(from = %pn_device, to = %lid_device, "session moved to the LID address");
        let mut out = vec![Change::Session {
            address: lid_device.clone(),
            record: bytes,
        }];
        if let Some(key) = identity {
            out.push(Change::Identity {
                address: lid_device.clone(),
                key: key.0.to_vec(),
            });
        }
        out.push(Change::RemoveSession(pn_device.clone()));
        out
    }

    /// Puts a pair in memory (both directions), dropping pairs it replaces; whether it is new.
    fn hold_pair(&mut self, lid: &Jid, phone: &Jid, cap: usize) -> bool {
        if self.alt_user(lid).as_ref() == Some(phone) && self.alt_user(phone).as_ref() == Some(lid)
        {
            return false;
        }
        if let Some(old_phone) = self.alt_user(lid) {
            self.lids.forget(&old_phone);
        }
        if let Some(old_lid) = self.alt_user(phone) {
            self.lids.forget(&old_lid);
        }
        self.lids.put(lid.clone(), Some(phone.clone()), cap);
        self.lids.put(phone.clone(), Some(lid.clone()), cap);
        true
    }
}

impl ConnectionMachine {
    /// Takes in LID/PN pairs `(lid, phone)` from any source: held in memory, and persisted when
    /// new (before anything that depends on them, as they leave now).
    pub(in crate::machine) fn learn_lid_pairs(
        &mut self,
        pairs: impl IntoIterator<Item = (Jid, Jid)>,
    ) {
        if !self.config.end_to_end {
            return;
        }
        let cap = self.config.max_loaded_records;
        for (lid, phone) in pairs {
            let (lid, phone) = (user_of(&lid), user_of(&phone));
            if !lid.is_lid() || !matches!(phone.server_part(), crate::jid::Server::User) {
                continue;
            }
            if lid.user_part().is_empty() || phone.user_part().is_empty() {
                continue;
            }
            if self.session_msg.hold_pair(&lid, &phone, cap) {
                self.persist(Change::LidMapping { lid, phone });
            }
        }
    }

    /// Our own pair (PN and LID users), from the credentials.
    pub(in crate::machine) fn learn_own_lid(&mut self) {
        let phone = self.creds.device.as_ref().map(|d| user_of(&d.jid));
        let lid = self
            .creds
            .own_lid
            .clone()
            .or_else(|| self.creds.device.as_ref().and_then(|d| d.lid.clone()));
        if let (Some(phone), Some(lid)) = (phone, lid) {
            self.learn_lid_pairs([(lid, phone)]);
        }
    }

    /// Marks the account LID-migrated (persisted; never lowered).
    pub(in crate::machine) fn set_lid_migrated(&mut self) {
        if !self.creds.lid_migrated {
            self.creds.lid_migrated = true;
            self.emit(crate::machine::Event::CredentialsChanged(Box::new(
                self.creds.clone(),
            )));
        }
    }

    /// Takes in the primary's `LID_MIGRATION_MAPPING_SYNC` push (LID.md §1.2), only ever from
    /// our own account (the caller checks): each pair's latest LID, else its assigned one.
    pub(super) fn lid_migration_sync(&mut self, message: &amarula_proto::e2e::Message) {
        use prost::Message as _;
        let Some(sync) = message
            .protocol_message
            .as_ref()
            .and_then(|p| p.lid_migration_mapping_sync_message.as_ref())
        else {
            return;
        };
        let Some(bytes) = sync.encoded_mapping_payload.as_deref() else {
            return;
        };
        let payload =
            match amarula_proto::lid_migration::LidMigrationMappingSyncPayload::decode(bytes) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "bad LID migration payload");
                    return;
                }
            };
        if payload.chat_db_migration_timestamp.unwrap_or(0) > 0 {
            self.set_lid_migrated();
        }
        let pairs: Vec<(Jid, Jid)> = payload
            .pn_to_lid_mappings
            .iter()
            .take(100_000)
            .filter_map(|m| {
                let lid = m.latest_lid.filter(|l| *l != 0).unwrap_or(m.assigned_lid);
                (lid != 0 && m.pn != 0)
                    .then(|| (Jid::lid(lid.to_string()), Jid::user(m.pn.to_string())))
            })
            .collect();
        tracing::debug!(
            pairs = pairs.len(),
            "LID migration mappings from the primary"
        );
        self.learn_lid_pairs(pairs);
    }

    /// Moves the pairwise state of `pn_device` to `lid_device` when only the PN address holds
    /// a session (both must be settled in memory). The session's new copy (with the identity
    /// it carries) and the old one's removal leave consecutively: one store batch.
    pub(super) fn migrate_session(&mut self, pn_device: &Jid, lid_device: &Jid) {
        let cap = self.config.max_loaded_records;
        for change in self.session_msg.migrate_session(pn_device, lid_device, cap) {
            self.persist(change);
        }
    }

    /// Moves a sender key from the PN sender to its LID sender when only the PN one is held.
    pub(super) fn migrate_sender_key(&mut self, group: &Jid, pn_device: &Jid, lid_device: &Jid) {
        let m = &mut self.session_msg;
        let lid_key = (group.clone(), lid_device.clone());
        if !matches!(m.sender_keys.lookup(&lid_key), Lookup::Absent) {
            return;
        }
        let pn_key = (group.clone(), pn_device.clone());
        let Lookup::Held(record) = m.sender_keys.lookup(&pn_key) else {
            return;
        };
        let record = record.clone();
        let cap = self.config.max_loaded_records;
        m.sender_keys.put(lid_key.clone(), Some(record), cap);
        tracing::debug!(%group, from = %pn_device, to = %lid_device, "sender key moved to the LID address");
        self.persist_sender_key(&lid_key);
    }
}
