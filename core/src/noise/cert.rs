//! Verification of the server's certificate chain (TRANSPORT.md §4).
//!
//! ServerHello's encrypted payload is a `CertChain`: an intermediate certificate signed by
//! WhatsApp's long-term root key, and a leaf signed by the intermediate that certifies the
//! server's static Noise key. Checking it is what keeps a man in the middle, who can always
//! complete a Noise XX handshake with a key of his own, from passing for the server.

use amarula_proto::Message;
use amarula_proto::cert_chain::NoiseCertificate;
use amarula_proto::cert_chain::noise_certificate::Details;
use bytes::Bytes;
use subtle::ConstantTimeEq;

use super::error::CertError;
use crate::xeddsa;

/// The key (and issuer serial) that certificate chains must lead back to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustAnchor {
    /// The root's 32-byte Montgomery public key; it signs the intermediate.
    pub root_public: [u8; 32],
    /// The serial the intermediate must name as its issuer.
    pub issuer_serial: u32,
}

impl TrustAnchor {
    /// WhatsApp's pinned root "WhatsAppLongTerm1" (WM `WACertPubKey`, issuer serial 0): the
    /// production default.
    pub const WHATSAPP: Self = Self {
        root_public: [
            0x14, 0x23, 0x75, 0x57, 0x4d, 0x0a, 0x58, 0x71, 0x66, 0xaa, 0xe7, 0x1e, 0xbe, 0x51,
            0x64, 0x37, 0xc4, 0xa2, 0x8b, 0x73, 0xe3, 0x69, 0x5c, 0x6c, 0xe1, 0xf7, 0xf9, 0x54,
            0x5d, 0xa8, 0xee, 0x6b,
        ],
        issuer_serial: 0,
    };

    /// A custom anchor, e.g. the fake root of a test server.
    #[must_use]
    pub const fn new(root_public: [u8; 32], issuer_serial: u32) -> Self {
        Self {
            root_public,
            issuer_serial,
        }
    }
}

impl Default for TrustAnchor {
    fn default() -> Self {
        Self::WHATSAPP
    }
}

/// The parsed details of one certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertDetails {
    /// This certificate's serial.
    pub serial: u32,
    /// The serial of the certificate (or root) that signed it.
    pub issuer_serial: u32,
    /// The certified X25519 public key.
    pub key: [u8; 32],
    /// Start of validity, unix seconds.
    pub not_before: u64,
    /// End of validity (inclusive), unix seconds.
    pub not_after: u64,
}

impl CertDetails {
    /// Serializes the details as the `CertChain.NoiseCertificate.Details` protobuf.
    #[must_use]
    pub fn to_protobuf(&self) -> Vec<u8> {
        Details {
            serial: Some(self.serial),
            issuer_serial: Some(self.issuer_serial),
            key: Some(Bytes::copy_from_slice(&self.key)),
            not_before: Some(self.not_before),
            not_after: Some(self.not_after),
        }
        .encode_to_vec()
    }

    /// Builds a signed `CertChain` protobuf: `intermediate` signed with `root_private`, `leaf`
    /// signed with `intermediate_private`, both with the deterministic signer. For test servers
    /// and the simulator; a real chain comes from WhatsApp.
    #[must_use]
    pub fn sign_chain(
        root_private: &[u8; 32],
        intermediate: &Self,
        intermediate_private: &[u8; 32],
        leaf: &Self,
    ) -> Vec<u8> {
        let cert = |details: Vec<u8>, signer: &[u8; 32]| {
            let signature = xeddsa::sign_deterministic(signer, &details);
            NoiseCertificate {
                details: Some(details.into()),
                signature: Some(Bytes::copy_from_slice(&signature)),
            }
        };
        amarula_proto::CertChain {
            leaf: Some(cert(leaf.to_protobuf(), intermediate_private)),
            intermediate: Some(cert(intermediate.to_protobuf(), root_private)),
        }
        .encode_to_vec()
    }

    fn from_proto(d: &Details, key: [u8; 32]) -> Self {
        Self {
            serial: d.serial.unwrap_or(0),
            issuer_serial: d.issuer_serial.unwrap_or(0),
            key,
            not_before: d.not_before.unwrap_or(0),
            not_after: d.not_after.unwrap_or(0),
        }
    }
}

/// A chain that passed every check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedCertChain {
    /// The leaf, certifying the server static key.
    pub leaf: CertDetails,
    /// The intermediate, signed by the root.
    pub intermediate: CertDetails,
}

/// Takes a certificate's details and 64-byte signature, or says which is missing (check 1).
fn parts<'a>(
    cert: Option<&'a NoiseCertificate>,
    [whole, details_name, signature_name]: [&'static str; 3],
) -> Result<(&'a [u8], &'a [u8; 64]), CertError> {
    let cert = cert.ok_or(CertError::Missing { field: whole })?;
    let details = cert.details.as_deref().ok_or(CertError::Missing {
        field: details_name,
    })?;
    let signature = cert.signature.as_deref().ok_or(CertError::Missing {
        field: signature_name,
    })?;
    let signature = <&[u8; 64]>::try_from(signature).map_err(|_| CertError::SignatureLength {
        field: signature_name,
        len: signature.len(),
    })?;
    Ok((details, signature))
}

/// `notBefore ≤ now ≤ notAfter`, both ends inclusive as in WM (an absent time counts as 0).
fn valid_at(d: &Details, now: u64) -> bool {
    d.not_before.unwrap_or(0) <= now && now <= d.not_after.unwrap_or(0)
}

/// Verifies the decrypted ServerHello payload against `trust` and the server static key
/// `server_static` learnt in the same handshake, at wall-clock time `now_unix_secs`.
///
/// Performs all eight checks of WM, in its order, with no clock-skew tolerance.
///
/// # Errors
/// The [`CertError`] of the first check that fails.
pub fn verify_cert_chain(
    payload: &[u8],
    server_static: &[u8; 32],
    now_unix_secs: u64,
    trust: &TrustAnchor,
) -> Result<VerifiedCertChain, CertError> {
    let chain = amarula_proto::CertChain::decode(payload).map_err(|_| CertError::MalformedChain)?;

    // 1. Both certificates have details and a signature; signatures are 64 bytes.
    let (leaf_raw, leaf_sig) = parts(
        chain.leaf.as_ref(),
        ["leaf", "leaf.details", "leaf.signature"],
    )?;
    let (inter_raw, inter_sig) = parts(
        chain.intermediate.as_ref(),
        [
            "intermediate",
            "intermediate.details",
            "intermediate.signature",
        ],
    )?;

    // 2. The intermediate is signed by the root, over its raw serialized details.
    if !xeddsa::verify(&trust.root_public, inter_raw, inter_sig) {
        return Err(CertError::IntermediateSignature);
    }

    // 3. The intermediate was issued by the anchor's serial and certifies a 32-byte key.
    let inter = Details::decode(inter_raw).map_err(|_| CertError::MalformedIntermediate)?;
    let inter_issuer = inter.issuer_serial.unwrap_or(0);
    if inter_issuer != trust.issuer_serial {
        return Err(CertError::IntermediateIssuerSerial {
            expected: trust.issuer_serial,
            actual: inter_issuer,
        });
    }
    let inter_key_bytes = inter.key.as_deref().unwrap_or_default();
    let inter_key =
        <[u8; 32]>::try_from(inter_key_bytes).map_err(|_| CertError::IntermediateKeyLength {
            len: inter_key_bytes.len(),
        })?;

    // 4. The leaf is signed by the intermediate's key.
    if !xeddsa::verify(&inter_key, leaf_raw, leaf_sig) {
        return Err(CertError::LeafSignature);
    }

    // 5. The intermediate is valid now.
    if !valid_at(&inter, now_unix_secs) {
        return Err(CertError::IntermediateValidity {
            now: now_unix_secs,
            not_before: inter.not_before.unwrap_or(0),
            not_after: inter.not_after.unwrap_or(0),
        });
    }

    // 6. The leaf names the intermediate as its issuer.
    let leaf = Details::decode(leaf_raw).map_err(|_| CertError::MalformedLeaf)?;
    let inter_serial = inter.serial.unwrap_or(0);
    let leaf_issuer = leaf.issuer_serial.unwrap_or(0);
    if leaf_issuer != inter_serial {
        return Err(CertError::LeafIssuerSerial {
            expected: inter_serial,
            actual: leaf_issuer,
        });
    }

    // 7. The leaf certifies the very static key the server proved it holds in this handshake.
    // Constant time, as WM does, although both keys are public.
    let leaf_key = leaf
        .key
        .as_deref()
        .and_then(|k| <[u8; 32]>::try_from(k).ok())
        .ok_or(CertError::LeafKeyMismatch)?;
    if !bool::from(leaf_key.ct_eq(server_static)) {
        return Err(CertError::LeafKeyMismatch);
    }

    // 8. The leaf is valid now.
    if !valid_at(&leaf, now_unix_secs) {
        return Err(CertError::LeafValidity {
            now: now_unix_secs,
            not_before: leaf.not_before.unwrap_or(0),
            not_after: leaf.not_after.unwrap_or(0),
        });
    }

    Ok(VerifiedCertChain {
        leaf: CertDetails::from_proto(&leaf, leaf_key),
        intermediate: CertDetails::from_proto(&inter, inter_key),
    })
}

#[cfg(test)]
mod tests {
    use amarula_proto::CertChain;

    use super::*;
    use crate::noise::KeyPair;

    const ROOT: [u8; 32] = [0x11; 32];
    const INTER: [u8; 32] = [0x22; 32];
    const NOW: u64 = 1_750_000_000;

    fn public(private: &[u8; 32]) -> [u8; 32] {
        *KeyPair::from_private_bytes(*private).public_bytes()
    }

    fn anchor() -> TrustAnchor {
        TrustAnchor::new(public(&ROOT), 0)
    }

    fn server_static() -> [u8; 32] {
        public(&[0x33; 32])
    }

    fn inter_details() -> CertDetails {
        CertDetails {
            serial: 7,
            issuer_serial: 0,
            key: public(&INTER),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        }
    }

    fn leaf_details() -> CertDetails {
        CertDetails {
            serial: 12345,
            issuer_serial: 7,
            key: server_static(),
            not_before: 1_700_000_000,
            not_after: 1_800_000_000,
        }
    }

    fn chain(inter: &CertDetails, leaf: &CertDetails) -> CertChain {
        let bytes = CertDetails::sign_chain(&ROOT, inter, &INTER, leaf);
        CertChain::decode(bytes.as_slice()).expect("we just encoded it")
    }

    fn check(c: &CertChain) -> Result<VerifiedCertChain, CertError> {
        verify_cert_chain(&c.encode_to_vec(), &server_static(), NOW, &anchor())
    }

    #[test]
    fn good_chain_verifies_with_both_validity_ends_inclusive() {
        let c = chain(&inter_details(), &leaf_details());
        let v = check(&c).expect("valid chain");
        assert_eq!(v.leaf, leaf_details());
        assert_eq!(v.intermediate, inter_details());
        for now in [1_700_000_000, 1_800_000_000] {
            assert!(
                verify_cert_chain(&c.encode_to_vec(), &server_static(), now, &anchor()).is_ok()
            );
        }
    }

    #[test]
    fn production_anchor_refuses_a_self_made_chain() {
        let c = chain(&inter_details(), &leaf_details());
        let r = verify_cert_chain(
            &c.encode_to_vec(),
            &server_static(),
            NOW,
            &TrustAnchor::WHATSAPP,
        );
        assert_eq!(r, Err(CertError::IntermediateSignature));
    }

    #[test]
    fn check_1_presence() {
        assert_eq!(
            verify_cert_chain(&[0xFF], &server_static(), NOW, &anchor()),
            Err(CertError::MalformedChain)
        );
        let good = chain(&inter_details(), &leaf_details());
        type Edit = fn(&mut CertChain);
        let cases: [(Edit, &str); 6] = [
            (|c| c.leaf = None, "leaf"),
            (|c| c.intermediate = None, "intermediate"),
            (|c| c.leaf.as_mut().unwrap().details = None, "leaf.details"),
            (
                |c| c.leaf.as_mut().unwrap().signature = None,
                "leaf.signature",
            ),
            (
                |c| c.intermediate.as_mut().unwrap().details = None,
                "intermediate.details",
            ),
            (
                |c| c.intermediate.as_mut().unwrap().signature = None,
                "intermediate.signature",
            ),
        ];
        for (edit, field) in cases {
            let mut c = good.clone();
            edit(&mut c);
            assert_eq!(check(&c), Err(CertError::Missing { field }));
        }
        let mut c = good.clone();
        c.leaf.as_mut().unwrap().signature = Some(Bytes::from_static(&[0; 63]));
        assert_eq!(
            check(&c),
            Err(CertError::SignatureLength {
                field: "leaf.signature",
                len: 63
            })
        );
        let mut c = good;
        c.intermediate.as_mut().unwrap().signature = Some(Bytes::from_static(&[0; 65]));
        assert_eq!(
            check(&c),
            Err(CertError::SignatureLength {
                field: "intermediate.signature",
                len: 65
            })
        );
    }

    #[test]
    fn check_2_intermediate_signed_by_root() {
        let mut c = chain(&inter_details(), &leaf_details());
        let sig = c.intermediate.as_ref().unwrap().signature.clone().unwrap();
        let mut sig = sig.to_vec();
        sig[5] ^= 1;
        c.intermediate.as_mut().unwrap().signature = Some(sig.into());
        assert_eq!(check(&c), Err(CertError::IntermediateSignature));
    }

    #[test]
    fn check_3_issuer_serial_and_key_length() {
        let inter = CertDetails {
            issuer_serial: 1,
            ..inter_details()
        };
        assert_eq!(
            check(&chain(&inter, &leaf_details())),
            Err(CertError::IntermediateIssuerSerial {
                expected: 0,
                actual: 1
            })
        );
        // A 31-byte key, correctly signed by the root.
        let details = Details {
            key: Some(Bytes::from_static(&[9; 31])),
            ..Details::decode(inter_details().to_protobuf().as_slice()).unwrap()
        }
        .encode_to_vec();
        let mut c = chain(&inter_details(), &leaf_details());
        let sig = xeddsa::sign_deterministic(&ROOT, &details);
        c.intermediate = Some(NoiseCertificate {
            details: Some(details.into()),
            signature: Some(Bytes::copy_from_slice(&sig)),
        });
        assert_eq!(check(&c), Err(CertError::IntermediateKeyLength { len: 31 }));
        // A custom anchor may expect another issuer serial.
        let inter = CertDetails {
            issuer_serial: 5,
            ..inter_details()
        };
        let c = chain(&inter, &leaf_details());
        let custom = TrustAnchor::new(public(&ROOT), 5);
        assert!(verify_cert_chain(&c.encode_to_vec(), &server_static(), NOW, &custom).is_ok());
    }

    #[test]
    fn check_4_leaf_signed_by_intermediate() {
        // The leaf signed by the root instead of the intermediate.
        let good = chain(&inter_details(), &leaf_details());
        let wrong = CertDetails::sign_chain(&ROOT, &inter_details(), &ROOT, &leaf_details());
        let mut c = CertChain::decode(wrong.as_slice()).unwrap();
        c.intermediate = good.intermediate;
        assert_eq!(check(&c), Err(CertError::LeafSignature));
    }

    #[test]
    fn check_5_intermediate_validity() {
        for (nb, na) in [(NOW + 1, NOW + 10), (NOW - 10, NOW - 1)] {
            let inter = CertDetails {
                not_before: nb,
                not_after: na,
                ..inter_details()
            };
            assert_eq!(
                check(&chain(&inter, &leaf_details())),
                Err(CertError::IntermediateValidity {
                    now: NOW,
                    not_before: nb,
                    not_after: na
                })
            );
        }
    }

    #[test]
    fn check_6_leaf_issuer_serial() {
        let leaf = CertDetails {
            issuer_serial: 8,
            ..leaf_details()
        };
        assert_eq!(
            check(&chain(&inter_details(), &leaf)),
            Err(CertError::LeafIssuerSerial {
                expected: 7,
                actual: 8
            })
        );
    }

    #[test]
    fn check_7_leaf_key_is_server_static() {
        let leaf = CertDetails {
            key: public(&[0x44; 32]),
            ..leaf_details()
        };
        assert_eq!(
            check(&chain(&inter_details(), &leaf)),
            Err(CertError::LeafKeyMismatch)
        );
    }

    #[test]
    fn check_8_leaf_validity() {
        let leaf = CertDetails {
            not_after: NOW - 1,
            ..leaf_details()
        };
        assert_eq!(
            check(&chain(&inter_details(), &leaf)),
            Err(CertError::LeafValidity {
                now: NOW,
                not_before: 1_700_000_000,
                not_after: NOW - 1
            })
        );
    }

    #[test]
    fn malformed_details() {
        let mut c = chain(&inter_details(), &leaf_details());
        let bad = vec![0x0A, 0x05, 0x01];
        let sig = xeddsa::sign_deterministic(&ROOT, &bad);
        c.intermediate = Some(NoiseCertificate {
            details: Some(bad.into()),
            signature: Some(Bytes::copy_from_slice(&sig)),
        });
        assert_eq!(check(&c), Err(CertError::MalformedIntermediate));

        let mut c = chain(&inter_details(), &leaf_details());
        let bad = vec![0xFF];
        let sig = xeddsa::sign_deterministic(&INTER, &bad);
        c.leaf = Some(NoiseCertificate {
            details: Some(bad.into()),
            signature: Some(Bytes::copy_from_slice(&sig)),
        });
        assert_eq!(check(&c), Err(CertError::MalformedLeaf));
    }
}
