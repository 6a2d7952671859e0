//! Known answers (computed independently with Python's hmac/hashlib and `cryptography`) and
//! properties of the app-state primitives and codec.

use amarula_proto::sync_action::SyncActionValue;
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::jid::Jid;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

const KEY_ID: &[u8] = &[0, 0, 0, 1];

fn ring() -> KeyRing {
    let mut r = KeyRing::new();
    r.insert(&SyncKey {
        id: KEY_ID.to_vec(),
        data: (0u8..32).collect(),
        timestamp: 1,
    });
    r
}

#[test]
fn kat_mutation_keys() {
    let k = MutationKeys::derive(&(0u8..32).collect::<Vec<_>>());
    assert_eq!(
        k.index.to_vec(),
        h("61387bcf643616a68bd611a45516b3980418323087d78bf08c615645549434b4")
    );
    assert_eq!(
        k.value_encryption.to_vec(),
        h("900ba2843ba5fb0cee55cf2a4de9503dce68187d3f6b95b420b008bde66f5a20")
    );
    assert_eq!(
        k.value_mac.to_vec(),
        h("d0879f6b61f0bcba79faad3f47a8a768fd7fc04a6cc8b3ecefedfa087413226f")
    );
    assert_eq!(
        k.snapshot_mac.to_vec(),
        h("69b2e91be6587307c43c29b027a71fdd55be25f07ca726714115430d23093071")
    );
    assert_eq!(
        k.patch_mac.to_vec(),
        h("693845bdd996652aca9ca0b96d0f081abf29943303c5eb19bdb84f38b24c32ab")
    );
}

fn kat_hash() -> LtHash {
    let mut hash = LtHash::default();
    hash.add(&[1; 32]);
    hash.add(&[2; 32]);
    hash
}

#[test]
fn kat_lthash() {
    assert_eq!(
        kat_hash().0.to_vec(),
        h(
            "530d65c5e08d8d0a3accb9e7b460caecbd83baba3240092381e5c30f7184d83ab5005be5ffb6764e69de87199bb35696e25c322762752ee97a3eea10a2f6bee5975b981c2445d73080f6c9a0a3b74d506bada8b1448e1d300e636ecb4cc782deaf512e1c7d489d23904966e24f3f153d22693053f7780deb018d7158d0ab517e"
        )
    );
}

#[test]
fn kat_macs_and_cipher() {
    let k = MutationKeys::derive(&(0u8..32).collect::<Vec<_>>());
    let idx = encode_index(&["pin_v1", "123@s.whatsapp.net"]);
    assert_eq!(idx, br#"["pin_v1","123@s.whatsapp.net"]"#);
    assert_eq!(
        mac::index_mac(&k.index, &idx).to_vec(),
        h("a48aac83ab1b12499e0163f29a9718bbd3e6af47c61be02121b0870effe97396")
    );
    let enc: Vec<u8> = (0u8..48).collect();
    let set = mac::value_mac(&k.value_mac, Operation::Set, KEY_ID, &enc);
    let rem = mac::value_mac(&k.value_mac, Operation::Remove, KEY_ID, &enc);
    assert_eq!(
        set.to_vec(),
        h("5984458a214d49755707bc5372901bae88acd572abff6b3e7e2d21a6cf98f885")
    );
    assert_eq!(
        rem.to_vec(),
        h("0fca09d6303574f578c18bfa25c4437644d85427273b5979ec2789e667a4f44a")
    );
    let snap = mac::snapshot_mac(&k.snapshot_mac, &kat_hash(), 7, Collection::RegularLow);
    assert_eq!(
        snap.to_vec(),
        h("300a1678e7714be71d52d7865e69a1d31e81222627c60a043b23433614d21146")
    );
    let patch = mac::patch_mac(
        &k.patch_mac,
        &snap,
        [&set[..], &rem[..]],
        7,
        Collection::RegularLow,
    );
    assert_eq!(
        patch.to_vec(),
        h("5f54c6c6870ddb361a72d30c84edec599a46a8b5ffcda0f42d427b22ab83cbe6")
    );
    let ct = mac::encrypt_value(&k.value_encryption, &[9; 16], b"hello app state");
    assert_eq!(
        ct,
        h("09090909090909090909090909090909c6d9c3e337e5271145535d256374f76a")
    );
    assert_eq!(
        mac::decrypt_value(&k.value_encryption, &ct).unwrap(),
        b"hello app state"
    );
    assert_eq!(mac::decrypt_value(&k.value_encryption, &ct[..20]), None);
}

fn pin(chat: &str, pinned: bool, ts: i64) -> PendingMutation {
    AppStateAction::Pin {
        chat: chat.parse().unwrap(),
        pinned,
    }
    .to_pending(ts)
    .unwrap()
    .1
}

fn remove(m: PendingMutation) -> PendingMutation {
    PendingMutation {
        operation: Operation::Remove,
        ..m
    }
}

#[test]
fn snapshot_then_patches_round_trip() {
    let keys = ring();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let c = Collection::RegularLow;
    let recs = [
        pin("1@s.whatsapp.net", true, 1000),
        pin("2@s.whatsapp.net", true, 1000),
    ];
    let (snap, _) = encode_snapshot(c, 3, &keys, KEY_ID, &recs, &mut rng).unwrap();
    let d = decode_snapshot(c, &snap, &keys).unwrap();
    assert_eq!(d.version, 3);
    assert_eq!(d.mutations.len(), 2);
    assert_eq!(
        d.mutations[0].action(),
        AppStateAction::Pin {
            chat: Jid::user("1"),
            pinned: true
        }
    );
    let mut state = CollectionState::default();
    state.apply(&d);
    assert_eq!(state.macs.len(), 2);

    // Overwrite 1, remove 2, add 3: the LTHash equals the one of a fresh snapshot of the result.
    let muts = [
        pin("1@s.whatsapp.net", false, 2000),
        remove(pin("2@s.whatsapp.net", true, 2000)),
        pin("3@s.whatsapp.net", true, 2000),
    ];
    let (patch, expected) = encode_patch(c, &state, &keys, KEY_ID, &muts, &mut rng).unwrap();
    let got = decode_patch(c, &state, &patch, &keys).unwrap();
    assert_eq!(got, expected);
    assert_eq!(got.version, 4);
    state.apply(&got);
    assert_eq!(state.macs.len(), 2);
    let fresh = [
        pin("1@s.whatsapp.net", false, 2000),
        pin("3@s.whatsapp.net", true, 2000),
    ];
    let (_, fresh) = encode_snapshot(c, 4, &keys, KEY_ID, &fresh, &mut rng).unwrap();
    // Different IVs give different value MACs, so compare the hash built from the live MACs.
    let mut rebuilt = LtHash::default();
    for v in state.macs.values() {
        rebuilt.add(v);
    }
    assert_eq!(rebuilt, state.hash);
    assert_eq!(fresh.added.len(), 2);
    // The same patch again is refused (version does not follow).
    assert!(matches!(
        decode_patch(c, &state, &patch, &keys),
        Err(AppStateError::Version { have: 4, got: 4 })
    ));
}

#[test]
fn tampering_is_refused() {
    let keys = ring();
    let mut rng = ChaCha20Rng::from_seed([8; 32]);
    let c = Collection::RegularHigh;
    let state = CollectionState::default();
    let muts = [AppStateAction::Mute {
        chat: Jid::user("5"),
        muted: true,
        until_ms: None,
    }
    .to_pending(5)
    .unwrap()
    .1];
    let (patch, _) = encode_patch(c, &state, &keys, KEY_ID, &muts, &mut rng).unwrap();
    assert!(decode_patch(c, &state, &patch, &keys).is_ok());

    let mut p = patch.clone();
    let mut b = p.patch_mac.clone().unwrap().to_vec();
    b[0] ^= 1;
    p.patch_mac = Some(b.into());
    assert_eq!(
        decode_patch(c, &state, &p, &keys),
        Err(AppStateError::PatchMac(1))
    );

    let mut p = patch.clone();
    let mut b = p.snapshot_mac.clone().unwrap().to_vec();
    b[3] ^= 1;
    p.snapshot_mac = Some(b.into());
    assert_eq!(
        decode_patch(c, &state, &p, &keys),
        Err(AppStateError::LtHash(1))
    );

    // A state whose LTHash diverged fails the snapshot MAC.
    let mut diverged = state.clone();
    diverged.hash.add(b"x");
    assert_eq!(
        decode_patch(c, &diverged, &patch, &keys),
        Err(AppStateError::LtHash(1))
    );

    let mut p = patch.clone();
    let rec = p.mutations[0].record.as_mut().unwrap();
    let mut v = rec.value.as_ref().unwrap().blob.clone().unwrap().to_vec();
    v[20] ^= 1;
    rec.value.as_mut().unwrap().blob = Some(v.into());
    assert_eq!(
        decode_patch(c, &state, &p, &keys),
        Err(AppStateError::ValueMac(0))
    );

    let mut p = patch.clone();
    let rec = p.mutations[0].record.as_mut().unwrap();
    rec.index.as_mut().unwrap().blob = Some(vec![0; 32].into());
    assert_eq!(
        decode_patch(c, &state, &p, &keys),
        Err(AppStateError::IndexMac(0))
    );

    // The wrong collection name changes both MACs.
    assert_eq!(
        decode_patch(Collection::Regular, &state, &patch, &keys),
        Err(AppStateError::LtHash(1))
    );
    let empty = KeyRing::new();
    assert_eq!(
        decode_patch(c, &state, &patch, &empty),
        Err(AppStateError::MissingKey(KEY_ID.to_vec()))
    );
    assert!(!AppStateError::MissingKey(vec![]).is_integrity());
    assert!(AppStateError::PatchMac(1).is_integrity());
}

#[test]
fn typed_actions() {
    let idx = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let v = SyncActionValue {
        contact_action: Some(amarula_proto::sync_action::ContactAction {
            full_name: Some("Ann Lee".into()),
            first_name: Some("Ann".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        AppStateAction::parse(
            Operation::Set,
            &idx(&["contact", "1@s.whatsapp.net"]),
            Some(&v)
        ),
        AppStateAction::Contact {
            jid: Jid::user("1"),
            full_name: Some("Ann Lee".into()),
            first_name: Some("Ann".into()),
            lid: None
        }
    );
    let star = AppStateAction::parse(
        Operation::Set,
        &idx(&["star", "g@g.us", "ID1", "0", "2@s.whatsapp.net"]),
        Some(&SyncActionValue {
            star_action: Some(amarula_proto::sync_action::StarAction {
                starred: Some(true),
            }),
            ..Default::default()
        }),
    );
    assert_eq!(
        star,
        AppStateAction::Star {
            message: ChatMessageRef {
                chat: Jid::group("g"),
                id: "ID1".into(),
                from_me: false,
                sender: Some(Jid::user("2"))
            },
            starred: true
        }
    );
    // A star round trips through its outgoing form.
    let (c, p) = star.to_pending(9).unwrap();
    assert_eq!(c, Collection::RegularHigh);
    assert_eq!(
        AppStateAction::parse(p.operation, &p.index, Some(&p.value)),
        star
    );
    assert_eq!(
        AppStateAction::parse(
            Operation::Set,
            &idx(&["deleteChat", "3@s.whatsapp.net", "1"]),
            None
        ),
        AppStateAction::DeleteChat {
            chat: Jid::user("3"),
            delete_media: true
        }
    );
    assert!(matches!(
        AppStateAction::parse(Operation::Set, &idx(&["something_new", "x"]), None),
        AppStateAction::Unknown { .. }
    ));
    // An index whose JID does not parse stays raw.
    assert!(matches!(
        AppStateAction::parse(Operation::Set, &idx(&["pin_v1"]), None),
        AppStateAction::Unknown { .. }
    ));
    let sv = |f: fn(&mut SyncActionValue)| {
        let mut v = SyncActionValue::default();
        f(&mut v);
        v
    };
    use amarula_proto::sync_action as sa;
    let cases: Vec<(Vec<String>, SyncActionValue, AppStateAction)> = vec![
        (
            idx(&["setting_locale"]),
            sv(|v| {
                v.locale_setting = Some(sa::LocaleSetting {
                    locale: Some("it_IT".into()),
                })
            }),
            AppStateAction::Locale("it_IT".into()),
        ),
        (
            idx(&["archive", "5@s.whatsapp.net"]),
            sv(|v| {
                v.archive_chat_action = Some(sa::ArchiveChatAction {
                    archived: Some(true),
                    message_range: None,
                })
            }),
            AppStateAction::Archive {
                chat: Jid::user("5"),
                archived: true,
            },
        ),
        (
            idx(&["markChatAsRead", "5@s.whatsapp.net"]),
            sv(|v| {
                v.mark_chat_as_read_action = Some(sa::MarkChatAsReadAction {
                    read: Some(false),
                    message_range: None,
                })
            }),
            AppStateAction::MarkChatRead {
                chat: Jid::user("5"),
                read: false,
            },
        ),
        (
            idx(&["deleteMessageForMe", "5@s.whatsapp.net", "M", "1", "0"]),
            sv(|v| {
                v.delete_message_for_me_action = Some(sa::DeleteMessageForMeAction {
                    delete_media: Some(true),
                    message_timestamp: Some(1),
                })
            }),
            AppStateAction::DeleteMessageForMe {
                message: ChatMessageRef {
                    chat: Jid::user("5"),
                    id: "M".into(),
                    from_me: true,
                    sender: None,
                },
                delete_media: true,
            },
        ),
        (
            idx(&["clearChat", "5@s.whatsapp.net", "1", "0"]),
            SyncActionValue::default(),
            AppStateAction::ClearChat {
                chat: Jid::user("5"),
                delete_starred: true,
                delete_media: false,
            },
        ),
        (
            idx(&["label_edit", "7"]),
            sv(|v| {
                v.label_edit_action = Some(sa::LabelEditAction {
                    name: Some("Work".into()),
                    color: Some(3),
                    ..Default::default()
                })
            }),
            AppStateAction::LabelEdit {
                label: "7".into(),
                name: Some("Work".into()),
                color: Some(3),
                deleted: false,
            },
        ),
        (
            idx(&["label_jid", "7", "5@s.whatsapp.net"]),
            sv(|v| {
                v.label_association_action = Some(sa::LabelAssociationAction {
                    labeled: Some(true),
                    model_meta_data: None,
                })
            }),
            AppStateAction::LabelChat {
                label: "7".into(),
                chat: Jid::user("5"),
                labeled: true,
            },
        ),
        (
            idx(&["label_message", "7", "5@s.whatsapp.net", "M", "0", "0"]),
            sv(|v| {
                v.label_association_action = Some(sa::LabelAssociationAction {
                    labeled: Some(true),
                    model_meta_data: None,
                })
            }),
            AppStateAction::LabelMessage {
                label: "7".into(),
                message: ChatMessageRef {
                    chat: Jid::user("5"),
                    id: "M".into(),
                    from_me: false,
                    sender: None,
                },
                labeled: true,
            },
        ),
    ];
    for (index, value, expected) in cases {
        assert_eq!(
            AppStateAction::parse(Operation::Set, &index, Some(&value)),
            expected
        );
    }
    // Every sendable action survives its outgoing form.
    let group_message = ChatMessageRef {
        chat: Jid::group("g"),
        id: "ID1".into(),
        from_me: false,
        sender: Some(Jid::user("6")),
    };
    for a in [
        AppStateAction::Mute {
            chat: Jid::user("5"),
            muted: true,
            until_ms: Some(99),
        },
        AppStateAction::Mute {
            chat: Jid::user("5"),
            muted: false,
            until_ms: None,
        },
        AppStateAction::Pin {
            chat: Jid::group("g"),
            pinned: true,
        },
        AppStateAction::Archive {
            chat: Jid::user("5"),
            archived: false,
        },
        AppStateAction::MarkChatRead {
            chat: Jid::user("5"),
            read: true,
        },
        AppStateAction::Contact {
            jid: Jid::user("5"),
            full_name: Some("Ann Lee".into()),
            first_name: Some("Ann".into()),
            lid: Some("77@lid".parse().unwrap()),
        },
        AppStateAction::PushName("Me".into()),
        AppStateAction::DeleteMessageForMe {
            message: group_message.clone(),
            delete_media: true,
        },
        AppStateAction::ClearChat {
            chat: Jid::user("5"),
            delete_starred: false,
            delete_media: true,
        },
        AppStateAction::DeleteChat {
            chat: Jid::group("g"),
            delete_media: true,
        },
        AppStateAction::LabelEdit {
            label: "3".into(),
            name: Some("Leads".into()),
            color: Some(4),
            deleted: false,
        },
        AppStateAction::LabelChat {
            label: "3".into(),
            chat: Jid::user("5"),
            labeled: true,
        },
        AppStateAction::LabelMessage {
            label: "3".into(),
            message: group_message.clone(),
            labeled: true,
        },
    ] {
        let (_, p) = a.to_pending(5).unwrap();
        assert_eq!(
            AppStateAction::parse(p.operation, &p.index, Some(&p.value)),
            a
        );
    }
    assert!(AppStateAction::Locale("x".into()).to_pending(1).is_none());
    // The collection, index and version the reference clients use for each.
    let form = |a: AppStateAction| {
        let (c, p) = a.to_pending(5).unwrap();
        (c, p.index, p.version)
    };
    assert_eq!(
        form(AppStateAction::LabelMessage {
            label: "3".into(),
            message: group_message,
            labeled: true,
        }),
        (
            Collection::Regular,
            idx(&[
                "label_message",
                "3",
                "g@g.us",
                "ID1",
                "0",
                "6@s.whatsapp.net"
            ]),
            3
        )
    );
    assert_eq!(
        form(AppStateAction::PushName("Me".into())),
        (Collection::CriticalBlock, idx(&["setting_pushName"]), 1)
    );
    assert_eq!(
        form(AppStateAction::DeleteChat {
            chat: Jid::user("5"),
            delete_media: true,
        }),
        (
            Collection::RegularHigh,
            idx(&["deleteChat", "5@s.whatsapp.net", "1"]),
            6
        )
    );
    assert_eq!(
        form(AppStateAction::ClearChat {
            chat: Jid::user("5"),
            delete_starred: true,
            delete_media: false,
        }),
        (
            Collection::RegularHigh,
            idx(&["clearChat", "5@s.whatsapp.net", "1", "0"]),
            6
        )
    );
    assert_eq!(
        form(AppStateAction::Contact {
            jid: Jid::user("5"),
            full_name: None,
            first_name: None,
            lid: None,
        }),
        (
            Collection::CriticalUnblockLow,
            idx(&["contact", "5@s.whatsapp.net"]),
            2
        )
    );
    // A REMOVE of a pin means unpinned.
    assert_eq!(
        AppStateAction::parse(
            Operation::Remove,
            &idx(&["pin_v1", "4@s.whatsapp.net"]),
            None
        ),
        AppStateAction::Pin {
            chat: Jid::user("4"),
            pinned: false
        }
    );
}

#[test]
fn index_json() {
    let parts = ["a\"b\\c\n", "é☃", "\u{1}", "😀"];
    let enc = encode_index(&parts);
    assert_eq!(
        enc,
        "[\"a\\\"b\\\\c\\n\",\"é☃\",\"\\u0001\",\"😀\"]".as_bytes()
    );
    assert_eq!(decode_index(&enc).unwrap(), parts);
    assert_eq!(
        decode_index(br#" [ "x" , "\ud83d\ude00" ] "#).unwrap(),
        ["x", "😀"]
    );
    assert_eq!(decode_index(b"[]").unwrap(), Vec::<String>::new());
    for bad in [
        &b"["[..],
        b"[1]",
        b"[\"a\",]",
        b"[\"a\"] x",
        b"{}",
        b"[\"\\ud83d\"]",
        b"\xff",
    ] {
        assert_eq!(decode_index(bad), None, "{bad:?}");
    }
}

proptest! {
    #[test]
    fn lthash_add_remove_inverse(base in proptest::collection::vec(any::<[u8; 32]>(), 0..8), x in any::<[u8; 32]>()) {
        let mut hash = LtHash::default();
        for b in &base { hash.add(b); }
        let before = hash;
        hash.add(&x);
        hash.remove(&x);
        prop_assert_eq!(hash, before);
        // Order does not matter.
        let mut rev = LtHash::default();
        for b in base.iter().rev() { rev.add(b); }
        prop_assert_eq!(rev, before);
    }

    #[test]
    fn index_round_trip(parts in proptest::collection::vec(".{0,12}", 0..6)) {
        let enc = encode_index(&parts);
        prop_assert_eq!(decode_index(&enc), Some(parts));
    }

    #[test]
    fn decode_index_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_index(&bytes);
    }

    #[test]
    fn patch_round_trip(ops in proptest::collection::vec((0u8..6, any::<bool>(), any::<bool>()), 1..12), seed in any::<[u8; 32]>()) {
        let keys = ring();
        let mut rng = ChaCha20Rng::from_seed(seed);
        let c = Collection::RegularLow;
        let mut state = CollectionState::default();
        for chunk in ops.chunks(3) {
            let muts: Vec<_> = chunk.iter().map(|(chat, pinned, rem)| {
                let m = pin(&format!("{chat}@s.whatsapp.net"), *pinned, 1);
                if *rem { remove(m) } else { m }
            }).collect();
            let (patch, expected) = encode_patch(c, &state, &keys, KEY_ID, &muts, &mut rng).unwrap();
            let got = decode_patch(c, &state, &patch, &keys).unwrap();
            prop_assert_eq!(&got, &expected);
            state.apply(&got);
            let mut rebuilt = LtHash::default();
            for v in state.macs.values() { rebuilt.add(v); }
            prop_assert_eq!(rebuilt, state.hash);
        }
    }
}
