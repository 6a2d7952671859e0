//! A handle on a simulated account and its virtual phone.

use std::sync::Arc;

use amarula_core::credentials::{Credentials, DeviceIdentity};
use amarula_core::jid::Jid;
use amarula_core::pairing::phone::{self, PairSuccessSpec};
use amarula_core::pairing::{self, QrError};
use amarula_proto::Message as _;
use bytes::Bytes;
use rand_core::RngCore;

use super::group::GroupError;
use super::phone_send::{self, PhoneSendError};
use super::state::{Command, DeviceState, PendingPair, Shared};

/// Why the virtual phone could not pair.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PairingError {
    /// The QR string does not parse.
    #[error("bad QR code: {0}")]
    Qr(#[from] QrError),
    /// No live registration connection shows this ref.
    #[error("no connection shows this QR ref")]
    UnknownRef,
    /// No companion asked for phone-code pairing with this number.
    #[error("no pending pairing-code request for this phone")]
    NoCodeRequest,
    /// The typed code does not fit the companion's request.
    #[error("code refused: {0}")]
    Code(#[from] pairing::PairingError),
    /// The connection went away.
    #[error("connection gone")]
    ConnectionGone,
}

/// A simulated account (cheap to clone).
#[derive(Clone)]
pub struct Account {
    pub(crate) shared: Arc<Shared>,
    pub(crate) phone: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("phone", &self.phone)
            .finish_non_exhaustive()
    }
}

impl Account {
    pub(crate) fn new(shared: Arc<Shared>, phone: &str) -> Self {
        Self {
            shared,
            phone: phone.to_owned(),
        }
    }

    /// The phone number.
    pub fn phone(&self) -> &str {
        &self.phone
    }

    /// The phone-number user JID (`PHONE@s.whatsapp.net`).
    pub fn jid(&self) -> Jid {
        Jid::user(self.phone.as_str())
    }

    /// The push name the account's devices last announced with `<presence name>`.
    pub fn push_name(&self) -> Option<String> {
        self.shared
            .lock()
            .presence
            .name(&self.phone)
            .map(str::to_owned)
    }

    /// The LID user JID (`LID@lid`).
    pub fn lid(&self) -> Jid {
        let st = self.shared.lock();
        let lid = st
            .accounts
            .get(&self.phone)
            .map(|a| a.lid.clone())
            .unwrap_or_default();
        Jid::lid(lid)
    }

    /// The account signature public key (the phone's identity key).
    pub fn account_key(&self) -> [u8; 32] {
        let st = self.shared.lock();
        st.accounts
            .get(&self.phone)
            .map(|a| *a.key.public_bytes())
            .unwrap_or_default()
    }

    /// The device JIDs of the account, the phone (device 0) first.
    pub fn devices(&self) -> Vec<Jid> {
        let st = self.shared.lock();
        st.accounts
            .get(&self.phone)
            .map(|a| a.devices.keys().map(|d| a.pn(*d)).collect())
            .unwrap_or_default()
    }

    /// Whether `device` has a live, logged-in connection.
    pub fn is_online(&self, device: &Jid) -> bool {
        let st = self.shared.lock();
        st.accounts
            .get(&self.phone)
            .and_then(|a| a.devices.get(&device.device()))
            .is_some_and(|d| d.conn.is_some())
    }

    /// Links a companion directly, as if it had paired earlier: allocates a device number,
    /// registers `creds`' Noise key for it, and returns the identity to store in
    /// `creds.device` before logging in.
    pub fn link_device(&self, creds: &Credentials) -> DeviceIdentity {
        let mut st = self.shared.lock();
        let st = &mut *st;
        let account = st.new_account(&self.phone);
        let n = account.next_device;
        account.next_device = n.saturating_add(1);
        let spec = PairSuccessSpec::new("link", account.pn(n), u32::from(n), 0);
        let details = phone::device_identity_details(&spec);
        let key = account.key.clone();
        let signed = phone::account_sign(
            &key,
            &details,
            creds.identity_key.public_bytes(),
            false,
            &mut st.rng,
        );
        let account = st.new_account(&self.phone);
        account.devices.insert(
            n,
            DeviceState {
                noise_pub: Some(*creds.noise_key.public_bytes()),
                key_index: u32::from(n),
                ..DeviceState::default()
            },
        );
        let identity = DeviceIdentity {
            jid: account.pn(n),
            lid: Some(account.lid_jid(n)),
            account: Bytes::from(signed.encode_to_vec()),
            platform: self.shared.config.platform.clone(),
            business_name: None,
        };
        st.announce_device(&self.phone, n);
        identity
    }

    /// The phone tells its companions that the account is LID-migrated: a
    /// `ProtocolMessage{LID_MIGRATION_MAPPING_SYNC}` to its own account (LID.md §1.2) with
    /// the pairs of `peers` (phone numbers) and a migration timestamp. Returns the message id.
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send).
    pub fn push_lid_migration(&self, peers: &[&str]) -> Result<String, PhoneSendError> {
        use amarula_proto::e2e;
        use amarula_proto::lid_migration::{LidMigrationMapping, LidMigrationMappingSyncPayload};
        let mappings = {
            let st = self.shared.lock();
            peers
                .iter()
                .filter_map(|p| {
                    let a = st.accounts.get(*p)?;
                    Some(LidMigrationMapping {
                        pn: a.phone.parse().ok()?,
                        assigned_lid: a.lid.parse().ok()?,
                        latest_lid: None,
                    })
                })
                .collect()
        };
        let payload = LidMigrationMappingSyncPayload {
            pn_to_lid_mappings: mappings,
            chat_db_migration_timestamp: Some(super::unix_now()),
        };
        let message = e2e::Message {
            protocol_message: Some(Box::new(e2e::ProtocolMessage {
                r#type: Some(e2e::protocol_message::Type::LidMigrationMappingSync as i32),
                lid_migration_mapping_sync_message: Some(e2e::LidMigrationMappingSyncMessage {
                    encoded_mapping_payload: Some(payload.encode_to_vec().into()),
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        self.phone_send(&self.jid(), &message)
    }

    /// Links a companion directly ([`link_device`](Self::link_device)) into `creds`: its
    /// device identity, and in LID mode the LID migration a pair-success would have told
    /// (`isChatDbLidMigrated`, LID.md §3.1).
    pub fn link_into(&self, creds: &mut Credentials) {
        creds.device = Some(self.link_device(creds));
        if self.shared.lock().lid_mode {
            creds.lid_migrated = true;
        }
    }

    /// Creates a group with this account as creator (superadmin) and `members` (phone numbers;
    /// accounts are created for unknown ones). Returns its JID, `ID@g.us`. No notification is
    /// sent; members learn of it from the messages and the metadata IQ.
    pub fn create_group(&self, subject: &str, members: &[&str]) -> Jid {
        self.shared
            .lock()
            .create_group(&self.phone, subject, members)
    }

    /// This account adds `phone` (created when unknown) to `group`: every device of every
    /// member, the new one included, gets `<notification type="w:gp2" from=GROUP><add>
    /// <participant jid="PHONE@s.whatsapp.net"/></add></notification>` (queued while offline).
    ///
    /// # Errors
    /// An unknown group, or `phone` already a member.
    pub fn add_to_group(&self, group: &Jid, phone: &str) -> Result<(), GroupError> {
        self.shared.lock().add_to_group(group, phone)
    }

    /// LID mode: whether this account refuses 1:1 messages from users it gave no privacy
    /// token and shares no group with (their sends get ack error 463).
    pub fn restrict_strangers(&self, on: bool) {
        let mut st = self.shared.lock();
        if on {
            st.restricted.insert(self.phone.clone());
        } else {
            st.restricted.remove(&self.phone);
        }
    }

    /// Whether this account gave `holder` (a phone number) a privacy token.
    pub fn trusts(&self, holder: &str) -> bool {
        self.shared
            .lock()
            .trusted
            .contains(&(self.phone.clone(), holder.to_owned()))
    }

    /// The members of `group` (phone numbers, in joining order), or `None` for an unknown
    /// group.
    pub fn group_members(&self, group: &Jid) -> Option<Vec<String>> {
        self.shared
            .lock()
            .groups
            .get(group.user_part())
            .map(|g| g.participants.clone())
    }

    /// The phone (device 0) sends `message` to `to` (a user or a group), end-to-end
    /// encrypted as a client does, with the stanza attributes its content calls for; the
    /// simulator routes it at once (offline devices get it at their next login). Returns the
    /// message id. The receipts devices send for it come back as
    /// [`SimEvent::PhoneReceipt`](super::SimEvent::PhoneReceipt).
    ///
    /// # Errors
    /// An unknown recipient, a group the account is not in, no device with keys.
    pub fn phone_send(
        &self,
        to: &Jid,
        message: &amarula_proto::e2e::Message,
    ) -> Result<String, PhoneSendError> {
        self.phone_send_raw(to, &message.encode_to_vec())
    }

    /// Like [`phone_send`](Self::phone_send), with the plaintext bytes as given (e.g. a field
    /// no schema declares).
    ///
    /// # Errors
    /// As [`phone_send`](Self::phone_send), and a plaintext that is not a `Message`.
    pub fn phone_send_raw(&self, to: &Jid, plaintext: &[u8]) -> Result<String, PhoneSendError> {
        let t = super::unix_now().to_string();
        let events = {
            let mut st = self.shared.lock();
            let (id, node, me) = phone_send::stanza(&mut st, &self.phone, to, plaintext)?;
            let events = phone_send::route(&mut st, &me, &id, &node, &t)?;
            (id, events)
        };
        let (id, events) = events;
        for e in events {
            self.shared.emit(e);
        }
        Ok(id)
    }

    /// How many one-time prekeys the phone (device 0) still holds: one is deleted each time a
    /// `pkmsg` uses it.
    pub fn phone_prekeys_left(&self) -> usize {
        self.shared
            .lock()
            .accounts
            .get(&self.phone)
            .map_or(0, |a| a.signal.one_time_left())
    }

    /// The phone scans `qr`: the connection showing its ref gets a valid pair-success for a
    /// new device of this account. The device is registered once the companion's
    /// `pair-device-sign` checks out ([`SimEvent::Paired`](super::SimEvent::Paired)); then the
    /// server sends stream error 515 and closes. Returns the new device's JID.
    ///
    /// # Errors
    /// A QR that does not parse, or a ref no live connection shows. (A QR whose Noise key is
    /// not that connection's is ignored by the connection, with a warning.)
    pub fn scan_qr(&self, qr: &str) -> Result<Jid, PairingError> {
        let parts = pairing::parse_qr(qr)?;
        let conn = {
            let st = self.shared.lock();
            *st.qr_refs
                .get(&parts.ref_)
                .ok_or(PairingError::UnknownRef)?
        };
        let (node, pending, jid) = pair_success(
            &self.shared,
            &self.phone,
            parts.identity_pub,
            parts.noise_pub,
            &parts.adv_secret,
        );
        if self
            .shared
            .command(conn, Command::PairSuccess { node, pending })
        {
            Ok(jid)
        } else {
            Err(PairingError::ConnectionGone)
        }
    }

    /// The user types `code` on the phone, for the pending phone-code request naming this
    /// account's number: sends the companion the `link_code_companion_reg` notification. The
    /// companion's `companion_finish` then leads to a pair-success and 515 as with a QR code.
    ///
    /// # Errors
    /// No pending request ([`SimEvent::PairingCodeRequested`](super::SimEvent) not seen yet), or
    /// a code that does not unwrap the companion's key.
    pub fn enter_code(&self, code: &str) -> Result<(), PairingError> {
        let (request, key, mut rng) = {
            let mut st = self.shared.lock();
            let request = st
                .code_requests
                .get(&self.phone)
                .cloned()
                .ok_or(PairingError::NoCodeRequest)?;
            let key = st
                .accounts
                .get(&self.phone)
                .map(|a| a.key.clone())
                .ok_or(PairingError::NoCodeRequest)?;
            // The slow key derivation runs outside the lock, on a generator split off the
            // simulator's.
            let mut seed = [0u8; 32];
            st.rng.fill_bytes(&mut seed);
            (
                request,
                key,
                <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed),
            )
        };
        let (notification, state) = phone::link_code_notification(
            &request.hello,
            code,
            &key,
            &request.pairing_ref,
            &mut rng,
        )?;
        self.shared.lock().code_requests.remove(&self.phone);
        let sent = self.shared.command(
            request.conn,
            Command::CodeEntered {
                notification,
                state: Box::new(state),
                phone: self.phone.clone(),
            },
        );
        if sent {
            Ok(())
        } else {
            Err(PairingError::ConnectionGone)
        }
    }
}

/// Allocates a device of `phone` and signs its pair-success.
pub(crate) fn pair_success(
    shared: &Shared,
    phone: &str,
    identity_pub: [u8; 32],
    noise_pub: [u8; 32],
    adv_secret: &[u8; 32],
) -> (amarula_core::binary::Node, PendingPair, Jid) {
    let mut st = shared.lock();
    let st = &mut *st;
    let lid_mode = st.lid_mode;
    let account = st.new_account(phone);
    let n = account.next_device;
    account.next_device = n.saturating_add(1);
    let mut id = [0u8; 8];
    st.rng.fill_bytes(&mut id);
    let iq_id = hex::encode_upper(id);
    let account = st.new_account(phone);
    let jid = account.pn(n);
    let unix = super::unix_now();
    let mut spec = PairSuccessSpec::new(&iq_id, jid.clone(), u32::from(n), unix);
    spec.lid = Some(account.lid_jid(n));
    spec.platform.clone_from(&shared.config.platform);
    if lid_mode {
        // LID.md §3.1: the phone tells the companion its chats are LID-migrated.
        let props = amarula_proto::generated::wa_companion_reg::ClientPairingProps {
            is_chat_db_lid_migrated: Some(true),
            ..Default::default()
        };
        spec.client_props = Some(amarula_proto::Message::encode_to_vec(&props));
    }
    let key = account.key.clone();
    let node = phone::sign_pair_success(&spec, &key, &identity_pub, adv_secret, &mut st.rng);
    let pending = PendingPair {
        iq_id,
        phone: phone.to_owned(),
        device: n,
        identity_pub,
        noise_pub,
    };
    (node, pending, jid)
}
