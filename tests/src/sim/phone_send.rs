//! The phone as a sender ([`Account::phone_send`](super::Account::phone_send)): device 0 of an
//! account encrypts a message as a real client does (SESSION.md §8, MESSAGES.md §2) and the
//! simulator routes it like any client's message.
//!
//! The stanza is the one a client would relay: `<participants>` with a pairwise `<enc>` for
//! each device of the recipient and each other device of the phone's own account (those
//! wrapped in `deviceSentMessage`), or for a group the phone's sender key to the devices that
//! lack it and one `skmsg`; the `type`, `edit`, `mediatype`, `decrypt-fail` and `<meta>` the
//! content calls for ([`StanzaAttrs`]). Sessions start from the keys the devices published,
//! taking a one-time prekey as a bundle query does.

use amarula_core::binary::Node;
use amarula_core::content::StanzaAttrs;
use amarula_core::jid::Jid;
use amarula_proto::Message as _;
use amarula_proto::e2e;
use prost::encoding::{WireType, encode_key, encode_varint};
use rand_core::RngCore;

use super::state::State;
use super::{SimEvent, iq, peer, route};

/// `Message.deviceSentMessage`.
const DEVICE_SENT_MESSAGE: u32 = 31;
/// `Message.messageContextInfo`.
const MESSAGE_CONTEXT_INFO: u32 = 35;
/// `DeviceSentMessage.message`.
const DSM_MESSAGE: u32 = 2;

/// Why the phone could not send.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PhoneSendError {
    /// The account does not exist.
    #[error("unknown account")]
    UnknownAccount,
    /// The recipient is neither a known user nor a group.
    #[error("unknown recipient")]
    UnknownRecipient,
    /// The plaintext is not a `Message` protobuf.
    #[error("the plaintext is not a Message")]
    NotAMessage,
    /// No device of the recipient has published keys.
    #[error("no device to send to")]
    NoDevices,
    /// The server refused it (the `error` of its ack: 403 not a member, 404 no such group).
    #[error("refused with {0}")]
    Refused(&'static str),
    /// Encryption failed.
    #[error("encryption failed: {0}")]
    Encrypt(String),
}

/// The plaintext for the phone's own other devices: `deviceSentMessage{destinationJID, message}`
/// around the plaintext's bytes as they are (fields no schema knows included), with the
/// message context copied outside (as clients do).
fn device_sent(destination: &Jid, plaintext: &[u8], message: &e2e::Message) -> Vec<u8> {
    let mut dsm = e2e::DeviceSentMessage {
        destination_jid: Some(destination.to_string()),
        message: None,
        phash: None,
    }
    .encode_to_vec();
    encode_key(DSM_MESSAGE, WireType::LengthDelimited, &mut dsm);
    encode_varint(plaintext.len() as u64, &mut dsm);
    dsm.extend_from_slice(plaintext);
    let mut out = Vec::with_capacity(dsm.len() + 8);
    encode_key(DEVICE_SENT_MESSAGE, WireType::LengthDelimited, &mut out);
    encode_varint(dsm.len() as u64, &mut out);
    out.extend_from_slice(&dsm);
    if let Some(context) = &message.message_context_info {
        prost::encoding::message::encode(MESSAGE_CONTEXT_INFO, context, &mut out);
    }
    out
}

/// `<enc>` with the content's attributes (`mediatype` only where it carries the content).
fn enc(kind: &str, bytes: Vec<u8>, attrs: &StanzaAttrs, carries_content: bool) -> Node {
    let mut node = Node::new("enc").attr("v", "2").attr("type", kind);
    if let (true, Some(media)) = (carries_content, attrs.media_type) {
        node = node.attr("mediatype", media);
    }
    if attrs.hide {
        node = node.attr("decrypt-fail", "hide");
    }
    node.bytes(bytes)
}

/// Every device number with published keys of the account of `phone`, as device JIDs.
fn devices_with_keys(st: &State, phone: &str) -> Vec<Jid> {
    st.accounts
        .get(phone)
        .map(|a| {
            a.devices
                .iter()
                .filter(|(_, d)| d.keys.identity.is_some() && d.keys.signed.is_some())
                .map(|(n, _)| a.pn(*n))
                .collect()
        })
        .unwrap_or_default()
}

/// Encrypts `plaintext` (padded here) pairwise for each of `devices` from the phone of
/// `account`, starting sessions from published keys where needed. Devices whose keys do not
/// give a session are skipped.
fn pairwise(
    st: &mut State,
    account: &str,
    devices: &[Jid],
    plaintext: impl Fn(&Jid) -> Vec<u8>,
    attrs: &StanzaAttrs,
    carries_content: bool,
) -> Result<Vec<(Jid, Node)>, PhoneSendError> {
    let mut out = Vec::new();
    for device in devices {
        let has = st
            .accounts
            .get(account)
            .ok_or(PhoneSendError::UnknownAccount)?
            .signal
            .has_session(device);
        let bundle = if has {
            None
        } else {
            let user = iq::bundle(st, &Node::new("user").attr("jid", device.clone()));
            match peer::parse_bundle(&user) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::debug!(%device, error = %e, "phone: no bundle; device skipped");
                    continue;
                }
            }
        };
        let State { accounts, rng, .. } = st;
        let phone = &mut accounts
            .get_mut(account)
            .ok_or(PhoneSendError::UnknownAccount)?
            .signal;
        let padded = peer::pad(&plaintext(device));
        let (kind, bytes) = phone
            .encrypt_pairwise(device, bundle.as_ref(), &padded, rng)
            .map_err(PhoneSendError::Encrypt)?;
        out.push((device.clone(), enc(kind, bytes, attrs, carries_content)));
    }
    Ok(out)
}

/// Builds the stanza the phone of `account` relays to `to` with `plaintext`, as a client
/// would: returns the message id, the stanza and the phone's JID.
pub(crate) fn stanza(
    st: &mut State,
    account: &str,
    to: &Jid,
    plaintext: &[u8],
) -> Result<(String, Node, Jid), PhoneSendError> {
    let message = e2e::Message::decode(plaintext).map_err(|_| PhoneSendError::NotAMessage)?;
    let attrs = StanzaAttrs::of(&message);
    let me = st
        .accounts
        .get(account)
        .map(|a| a.pn(0))
        .ok_or(PhoneSendError::UnknownAccount)?;
    let mut random = [0u8; 9];
    st.rng.fill_bytes(&mut random);
    let id = format!("3A{}", hex::encode_upper(random));
    let mut node = Node::new("message")
        .attr("id", id.as_str())
        .attr("to", to.to_non_device())
        .attr("type", attrs.message_type.as_str());
    if let Some(edit) = attrs.edit {
        node = node.attr("edit", edit.as_str());
    }
    let mut children = Vec::new();
    if to.is_group() {
        let group = st
            .groups
            .get(to.user_part())
            .ok_or(PhoneSendError::Refused("404"))?;
        let gjid = group.jid();
        let members = group.participants.clone();
        let devices: Vec<Jid> = members
            .iter()
            .flat_map(|m| devices_with_keys(st, m))
            .filter(|d| *d != me)
            .collect();
        let State { accounts, rng, .. } = &mut *st;
        let phone = &mut accounts
            .get_mut(account)
            .ok_or(PhoneSendError::UnknownAccount)?
            .signal;
        let targets = phone.take_skdm_targets(&gjid, &devices);
        let skdm = phone.own_skdm(&gjid, &me, rng);
        let skmsg = phone
            .group_encrypt(&gjid, &me, &peer::pad(plaintext))
            .map_err(PhoneSendError::Encrypt)?;
        let skdm_message = peer::skdm_message(&gjid, &skdm).encode_to_vec();
        let encs = pairwise(
            st,
            account,
            &targets,
            |_| skdm_message.clone(),
            &attrs,
            false,
        )?;
        if !encs.is_empty() {
            children.push(peer::participants(encs));
        }
        children.push(enc("skmsg", skmsg, &attrs, true));
    } else {
        let to_phone = st
            .phone_of(to.user_part())
            .map(str::to_owned)
            .ok_or(PhoneSendError::UnknownRecipient)?;
        let mut devices = devices_with_keys(st, &to_phone);
        if to_phone != account {
            devices.extend(devices_with_keys(st, account));
        }
        devices.retain(|d| *d != me);
        let own_copy = device_sent(&to.to_non_device(), plaintext, &message);
        let encs = pairwise(
            st,
            account,
            &devices,
            |d| {
                if d.user_part() == account {
                    own_copy.clone()
                } else {
                    plaintext.to_vec()
                }
            },
            &attrs,
            true,
        )?;
        if encs.is_empty() {
            return Err(PhoneSendError::NoDevices);
        }
        children.push(peer::participants(encs));
    }
    if let Some(meta) = attrs.meta {
        children.push(meta.node());
    }
    Ok((id, node.children(children), me))
}

/// Routes the phone's stanza as the server routes a client's: copies to live devices at once,
/// to the others at their next login, to other phones through their decryption.
pub(crate) fn route(
    st: &mut State,
    me: &Jid,
    id: &str,
    node: &Node,
    t: &str,
) -> Result<Vec<SimEvent>, PhoneSendError> {
    let to = super::state::jid_attr(node, "to").ok_or(PhoneSendError::UnknownRecipient)?;
    let plan = route::plan(st, me, &to, node, t);
    if let Some(code) = plan.error {
        return Err(PhoneSendError::Refused(code));
    }
    let mut delivered = Vec::new();
    let mut queued = Vec::new();
    let mut events = Vec::new();
    for copy in plan.copies {
        if copy.device == 0 {
            events.extend(super::phone::receive(
                st,
                &copy.phone,
                &copy.node,
                me,
                plan.group.as_ref(),
            ));
            delivered.push(copy.jid);
            continue;
        }
        st.encrypted.insert((copy.jid.clone(), id.to_owned()));
        match st.deliver(&copy.phone, copy.device, copy.node) {
            Some((jid, true)) => delivered.push(jid),
            Some((jid, false)) => queued.push(jid),
            None => {}
        }
    }
    events.insert(
        0,
        SimEvent::MessageRouted {
            id: id.to_owned(),
            from: me.clone(),
            delivered,
            queued,
        },
    );
    Ok(events)
}
