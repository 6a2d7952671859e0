//! The Signal protocol as WhatsApp uses it (protocol version 3): keys, X3DH session setup, the
//! Double Ratchet for pairwise messages, and sender keys for groups.
//!
//! Everything here is pure and synchronous. State is plain data the caller owns: a
//! [`SessionRecord`] per peer device, a [`SenderKeyRecord`] per (group, sender), and our
//! prekeys. Every operation that changes a record changes it in place; the caller persists
//! the record (its `to_bytes`) before sending anything that depends on it. Randomness and new
//! key pairs come from a [`KeySource`] the caller passes in (any [`rand_core::CryptoRngCore`]
//! is one), so a recorded exchange replays byte for byte.
//!
//! # Pairwise
//! ```
//! use amarula_core::signal::{Identity, IdentityPolicy, PreKey, PreKeyBundle, PreKeySignalMessage,
//!     SessionRecord, CiphertextMessage};
//! use rand_core::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::from_seed([7; 32]);
//! let (alice, bob) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
//! let bob_spk = bob.signed_prekey(1, &mut rng);
//! let bob_otk = PreKey::generate_batch(1, 1, &mut rng).remove(0);
//! let bundle = PreKeyBundle {
//!     registration_id: bob.registration_id,
//!     identity_key: bob.public(),
//!     signed_prekey_id: bob_spk.id,
//!     signed_prekey: amarula_core::signal::PublicKey::of(&bob_spk.key_pair),
//!     signed_prekey_signature: bob_spk.signature,
//!     prekey: Some((bob_otk.id, bob_otk.public())),
//! };
//! let mut at_alice = SessionRecord::new();
//! at_alice.process_bundle(&alice, &bundle, IdentityPolicy::default(), &mut rng)?;
//! let first = at_alice.encrypt(b"hello")?;
//! assert_eq!(first.enc_type(), "pkmsg");
//!
//! let mut at_bob = SessionRecord::new();
//! let pkmsg = PreKeySignalMessage::parse(first.serialized())?;
//! let out = at_bob.decrypt_prekey_message(&bob, &pkmsg, &bob_spk, Some(&bob_otk),
//!     IdentityPolicy::default(), &mut rng)?;
//! assert_eq!(&out.plaintext[..], b"hello");
//! assert_eq!(out.used_prekey, Some(1)); // delete it from the store
//! let reply = at_bob.encrypt(b"hi")?;
//! assert_eq!(&at_alice.decrypt(reply.serialized(), &mut rng)?[..], b"hi");
//! # Ok::<(), amarula_core::signal::SignalError>(())
//! ```
//!
//! # Bounds
//! A peer cannot make us store or compute unbounded keys: a message more than
//! [`MAX_FORWARD_JUMP`] steps ahead is refused, at most [`MAX_SKIPPED_KEYS`] skipped keys are
//! kept per chain, [`MAX_RECEIVER_CHAINS`] receiving chains per session,
//! [`MAX_PREVIOUS_STATES`] previous sessions per record and [`MAX_SENDER_KEY_STATES`] sender
//! keys per sender.
//!
//! # Secrets
//! Private keys, chain keys and message keys are zeroized when dropped and never shown by
//! `Debug`. Plaintexts come back in [`zeroize::Zeroizing`] buffers.

mod crypto;
mod error;
mod group;
mod keys;
mod pbwrite;
mod ratchet;
mod session;
mod store;
mod wire;
mod x3dh;

#[doc(hidden)]
pub use crypto::bench;
pub use error::SignalError;
pub use group::{MAX_SENDER_KEY_STATES, SenderKeyRecord};
pub use keys::{
    Identity, IdentityChange, IdentityPolicy, KEY_TYPE_DJB, KeySource, PreKey, PreKeyBundle,
    PublicKey, generate_registration_id,
};
pub use ratchet::{MAX_FORWARD_JUMP, MAX_SKIPPED_KEYS};
pub use session::{MAX_PREVIOUS_STATES, MAX_RECEIVER_CHAINS, SessionRecord};
pub use store::{signed_prekey_from_bytes, signed_prekey_to_bytes};
pub use wire::{
    CiphertextMessage, MAC_LEN, PreKeySignalMessage, SIGNATURE_LEN, SenderKeyDistributionMessage,
    SenderKeyMessage, SignalMessage, VERSION_BYTE,
};
pub use x3dh::PreKeyDecrypted;
