//! One conformance suite for every store that keeps all kinds of [`Change`]: the
//! [`MemoryStore`] and the [`SqliteStore`](super::SqliteStore) (in memory and in a file) run
//! the same batches and must give the same answers through [`CredentialStore::load_keys`],
//! [`CredentialStore::load_pending`] and their getters.

use amarula_core::jid::Jid;

use super::testutil::{contract, paired, same, sent};
use super::{
    Change, CredentialStore, DeviceList, LoadRequest, Loaded, MemoryStore, PendingMessage,
    StoreError,
};
use amarula_core::machine::SentMessage;

/// The getters both stores have (the memory store's are synchronous and infallible, the
/// SQLite store's async), in one form for the suite.
pub(crate) trait Inspect: CredentialStore {
    async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    async fn prekey_count(&self) -> Result<u64, StoreError>;
    async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError>;
    async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError>;
    async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError>;
    async fn session_count(&self) -> Result<u64, StoreError>;
    async fn sender_key(&self, group: &Jid, sender: &Jid) -> Result<Option<Vec<u8>>, StoreError>;
    async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError>;
    async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError>;
    async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError>;
    async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError>;
    async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError>;
}

impl Inspect for MemoryStore {
    async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Self::prekey(self, id))
    }
    async fn prekey_count(&self) -> Result<u64, StoreError> {
        Ok(Self::prekey_count(self))
    }
    async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Self::signed_prekey(self, id))
    }
    async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Self::session(self, address))
    }
    async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
        Ok(Self::sessions_for(self, user))
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        Ok(Self::session_count(self))
    }
    async fn sender_key(&self, group: &Jid, sender: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Self::sender_key(self, group, sender))
    }
    async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(Self::identity(self, address))
    }
    async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError> {
        Ok(Self::device_list(self, user))
    }
    async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError> {
        Ok(Self::phone_for_lid(self, lid))
    }
    async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError> {
        Ok(Self::lid_for_phone(self, phone))
    }
    async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        Ok(Self::pending(self))
    }
}

#[cfg(feature = "sqlite")]
impl Inspect for super::SqliteStore {
    async fn prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Self::prekey(self, id).await
    }
    async fn prekey_count(&self) -> Result<u64, StoreError> {
        Self::prekey_count(self).await
    }
    async fn signed_prekey(&self, id: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Self::signed_prekey(self, id).await
    }
    async fn session(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::session(self, address).await
    }
    async fn sessions_for(&self, user: &Jid) -> Result<Vec<(Jid, Vec<u8>)>, StoreError> {
        Self::sessions_for(self, user).await
    }
    async fn session_count(&self) -> Result<u64, StoreError> {
        Self::session_count(self).await
    }
    async fn sender_key(&self, group: &Jid, sender: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::sender_key(self, group, sender).await
    }
    async fn identity(&self, address: &Jid) -> Result<Option<Vec<u8>>, StoreError> {
        Self::identity(self, address).await
    }
    async fn device_list(&self, user: &Jid) -> Result<Option<DeviceList>, StoreError> {
        Self::device_list(self, user).await
    }
    async fn phone_for_lid(&self, lid: &Jid) -> Result<Option<Jid>, StoreError> {
        Self::phone_for_lid(self, lid).await
    }
    async fn lid_for_phone(&self, phone: &Jid) -> Result<Option<Jid>, StoreError> {
        Self::lid_for_phone(self, phone).await
    }
    async fn pending(&self) -> Result<Vec<PendingMessage>, StoreError> {
        Self::pending(self).await
    }
}

pub(crate) fn jid(s: &str) -> Jid {
    s.parse().expect("valid jid")
}

/// The JIDs the suite uses. Device JIDs carry an explicit device, as the core gives them.
struct Names {
    /// Device 0 (the phone) of alice, and the same JID without device: two different keys.
    alice0: Jid,
    alice_bare: Jid,
    alice1: Jid,
    alice_user: Jid,
    /// With an agent: a third key of the same user.
    alice_agent: Jid,
    bob0: Jid,
    lid_device: Jid,
    lid: Jid,
    group: Jid,
    /// Never stored.
    stranger: Jid,
}

fn names() -> Names {
    Names {
        alice0: jid("15551234567:0@s.whatsapp.net"),
        alice_bare: jid("15551234567@s.whatsapp.net"),
        alice1: jid("15551234567:1@s.whatsapp.net"),
        alice_user: jid("15551234567@s.whatsapp.net"),
        alice_agent: jid("15551234567_1:2@s.whatsapp.net"),
        bob0: jid("15557654321:0@s.whatsapp.net"),
        lid_device: jid("123456789012345:3@lid"),
        lid: jid("123456789012345@lid"),
        group: jid("120363041234567890@g.us"),
        stranger: jid("15550000000:0@s.whatsapp.net"),
    }
}

fn pending_message(id: &str, n: u8) -> PendingMessage {
    PendingMessage {
        id: id.into(),
        node: vec![0xf8, n, n].into(),
        ack_token: if n % 2 == 0 {
            Some(u64::MAX - u64::from(n))
        } else {
            None
        },
        received_unix_ms: 1_750_000_000_000 + u64::from(n),
    }
}

/// One batch with a change of every kind.
fn every_kind(n: &Names) -> Vec<Change> {
    vec![
        Change::Credentials(Box::new(paired(60))),
        Change::SentMessage(sent(1)),
        Change::PreKey {
            id: 1,
            record: vec![1; 40],
        },
        Change::PreKey {
            id: 2,
            record: vec![2; 40],
        },
        Change::PreKey {
            id: u32::MAX,
            record: vec![0xff],
        },
        Change::SignedPreKey {
            id: 7,
            record: vec![7; 100],
        },
        Change::Session {
            address: n.alice0.clone(),
            record: vec![10],
        },
        Change::Session {
            address: n.alice_bare.clone(),
            record: vec![19],
        },
        Change::Session {
            address: n.alice1.clone(),
            record: vec![11],
        },
        Change::Session {
            address: n.alice_agent.clone(),
            record: vec![12],
        },
        Change::Session {
            address: n.bob0.clone(),
            record: vec![20],
        },
        Change::Session {
            address: n.lid_device.clone(),
            record: vec![30],
        },
        Change::SenderKey {
            group: n.group.clone(),
            sender: n.alice1.clone(),
            record: vec![41],
        },
        Change::SenderKey {
            group: n.group.clone(),
            sender: n.alice0.clone(),
            record: vec![40],
        },
        Change::Identity {
            address: n.bob0.clone(),
            key: vec![5; 33],
        },
        Change::DeviceList {
            user: n.alice_user.clone(),
            list: DeviceList {
                devices: vec![0, 1, 65535],
                updated_unix_ms: 1_700_000_000_000,
            },
        },
        Change::DeviceList {
            user: n.lid.clone(),
            list: DeviceList {
                devices: vec![],
                updated_unix_ms: 0,
            },
        },
        Change::LidMapping {
            lid: n.lid.clone(),
            phone: n.alice_user.clone(),
        },
        Change::Pending(pending_message("first", 1)),
        Change::Pending(pending_message("second", 2)),
        Change::Pending(pending_message("third", 3)),
    ]
}

/// A request mixing held and absent keys, in an order of its own.
fn request(n: &Names) -> LoadRequest {
    let mut request = LoadRequest::default();
    request.sessions = vec![
        n.stranger.clone(),
        n.alice1.clone(),
        n.alice0.clone(),
        n.lid_device.clone(),
        n.alice_bare.clone(),
        jid("15551234567:9@s.whatsapp.net"),
        n.alice_agent.clone(),
        n.bob0.clone(),
        // The same key twice gets two answers.
        n.alice1.clone(),
    ];
    request.sender_keys = vec![
        (n.group.clone(), n.bob0.clone()),
        (n.group.clone(), n.alice0.clone()),
        (n.group.clone(), n.alice1.clone()),
        (jid("120363000000000000@g.us"), n.alice1.clone()),
    ];
    request.prekeys = vec![3, u32::MAX, 1, 0, 2];
    request.device_lists = vec![
        n.stranger.to_non_device(),
        n.lid.clone(),
        n.alice_user.clone(),
    ];
    request
}

fn some(v: &[u8]) -> Option<Vec<u8>> {
    Some(v.to_vec())
}

/// Checks `loaded` answers `request` exactly: the same keys in the same order, with `expect`ed
/// records.
#[track_caller]
fn assert_loaded(
    loaded: &Loaded,
    request: &LoadRequest,
    sessions: &[Option<Vec<u8>>],
    sender_keys: &[Option<Vec<u8>>],
    prekeys: &[Option<Vec<u8>>],
    device_lists: &[Option<DeviceList>],
) {
    let zip = |keys: &[Jid], values: &[Option<Vec<u8>>]| -> Vec<(Jid, Option<Vec<u8>>)> {
        keys.iter().cloned().zip(values.iter().cloned()).collect()
    };
    assert_eq!(
        loaded.sessions,
        zip(&request.sessions, sessions),
        "sessions"
    );
    let sk: Vec<_> = request
        .sender_keys
        .iter()
        .cloned()
        .zip(sender_keys.iter().cloned())
        .collect();
    assert_eq!(loaded.sender_keys, sk, "sender keys");
    let pk: Vec<_> = request
        .prekeys
        .iter()
        .copied()
        .zip(prekeys.iter().cloned())
        .collect();
    assert_eq!(loaded.prekeys, pk, "prekeys");
    let dl: Vec<_> = request
        .device_lists
        .iter()
        .cloned()
        .zip(device_lists.iter().cloned())
        .collect();
    assert_eq!(loaded.device_lists, dl, "device lists");
}

/// The suite: every kind of change in, read back by key and through the getters, removals,
/// replacements, and `delete`.
pub(crate) async fn conformance(store: &impl Inspect) {
    unacked_sent(store).await;
    message_secrets(store).await;
    lid_mappings(store).await;
    app_state(store).await;
    let n = names();
    // Empty: every key absent, nothing pending.
    let request = request(&n);
    let loaded = store.load_keys(&request).await.expect("load_keys");
    assert_loaded(
        &loaded,
        &request,
        &vec![None; 9],
        &[None, None, None, None],
        &[None, None, None, None, None],
        &[None, None, None],
    );
    assert!(store.load_pending().await.expect("load_pending").is_empty());
    let nothing = store
        .load_keys(&LoadRequest::default())
        .await
        .expect("empty request");
    assert!(nothing.sessions.is_empty() && nothing.prekeys.is_empty());

    store.apply(&every_kind(&n)).await.expect("apply");

    let alice_list = DeviceList {
        devices: vec![0, 1, 65535],
        updated_unix_ms: 1_700_000_000_000,
    };
    let empty_list = DeviceList {
        devices: vec![],
        updated_unix_ms: 0,
    };
    let loaded = store.load_keys(&request).await.expect("load_keys");
    assert_loaded(
        &loaded,
        &request,
        &[
            None,
            some(&[11]),
            some(&[10]),
            some(&[30]),
            some(&[19]),
            None,
            some(&[12]),
            some(&[20]),
            some(&[11]),
        ],
        &[None, some(&[40]), some(&[41]), None],
        &[None, some(&[0xff]), some(&[1; 40]), None, some(&[2; 40])],
        &[None, Some(empty_list.clone()), Some(alice_list.clone())],
    );
    // A device list is by user: a device JID of that user finds it too.
    let mut by_device = LoadRequest::default();
    by_device.device_lists = vec![n.alice1.clone()];
    let loaded = store.load_keys(&by_device).await.expect("load_keys");
    assert_eq!(
        loaded.device_lists,
        [(n.alice1.clone(), Some(alice_list.clone()))]
    );
    let pending = store.load_pending().await.expect("load_pending");
    assert_eq!(
        pending,
        [
            pending_message("first", 1),
            pending_message("second", 2),
            pending_message("third", 3)
        ]
    );

    // The getters agree.
    assert!(same(
        &paired(60),
        &store.load().await.expect("load").expect("credentials")
    ));
    assert_eq!(
        store.load_sent().await.expect("load_sent"),
        [sent(1)],
        "sent messages"
    );
    assert_eq!(store.prekey(2).await.expect("prekey"), some(&[2; 40]));
    assert_eq!(store.prekey(3).await.expect("prekey"), None);
    assert_eq!(store.prekey_count().await.expect("count"), 3);
    assert_eq!(store.signed_prekey(7).await.expect("get"), some(&[7; 100]));
    assert_eq!(store.signed_prekey(8).await.expect("get"), None);
    assert_eq!(store.session(&n.alice0).await.expect("get"), some(&[10]));
    assert_eq!(
        store.session(&n.alice_bare).await.expect("get"),
        some(&[19])
    );
    assert_eq!(store.session(&n.stranger).await.expect("get"), None);
    assert_eq!(store.session_count().await.expect("count"), 6);
    // Every device of a user (any agent), ordered by the address's text; the stored JIDs come
    // back equal (`:0` included).
    assert_eq!(
        store.sessions_for(&n.alice1).await.expect("for"),
        [
            (n.alice0.clone(), vec![10]),
            (n.alice1.clone(), vec![11]),
            (n.alice_bare.clone(), vec![19]),
            (n.alice_agent.clone(), vec![12]),
        ]
    );
    assert_eq!(
        store.sessions_for(&n.lid).await.expect("for"),
        [(n.lid_device.clone(), vec![30])]
    );
    assert!(
        store
            .sessions_for(&n.stranger)
            .await
            .expect("for")
            .is_empty()
    );
    assert_eq!(
        store.sender_key(&n.group, &n.alice0).await.expect("get"),
        some(&[40])
    );
    assert_eq!(
        store.sender_key(&n.group, &n.bob0).await.expect("get"),
        None
    );
    assert_eq!(store.identity(&n.bob0).await.expect("get"), some(&[5; 33]));
    assert_eq!(store.identity(&n.alice0).await.expect("get"), None);
    assert_eq!(
        store.device_list(&n.alice_user).await.expect("get"),
        Some(alice_list.clone())
    );
    assert_eq!(
        store.phone_for_lid(&n.lid_device).await.expect("get"),
        Some(n.alice_user.clone())
    );
    assert_eq!(
        store.lid_for_phone(&n.alice1).await.expect("get"),
        Some(n.lid.clone())
    );
    assert_eq!(store.pending().await.expect("pending"), pending);

    // Replacements and removals, in one batch.
    let new_lid = jid("999999999999999@lid");
    store
        .apply(&[
            Change::RemovePreKey(1),
            Change::RemovePreKey(12345),
            Change::RemoveSignedPreKey(7),
            Change::Session {
                address: n.alice1.clone(),
                record: vec![13],
            },
            Change::RemoveSession(n.alice0.clone()),
            Change::RemoveSession(n.stranger.clone()),
            Change::SenderKey {
                group: n.group.clone(),
                sender: n.alice1.clone(),
                record: vec![42],
            },
            Change::DeviceList {
                user: n.alice1.clone(),
                list: empty_list.clone(),
            },
            Change::LidMapping {
                lid: new_lid.clone(),
                phone: n.alice_user.clone(),
            },
            // Kept again: replaced where it was.
            Change::Pending(pending_message("first", 5)),
            Change::PendingDone("second".into()),
            Change::PendingDone("never".into()),
            Change::Pending(pending_message("fourth", 4)),
        ])
        .await
        .expect("apply");
    let loaded = store.load_keys(&request).await.expect("load_keys");
    assert_loaded(
        &loaded,
        &request,
        &[
            None,
            some(&[13]),
            None,
            some(&[30]),
            some(&[19]),
            None,
            some(&[12]),
            some(&[20]),
            some(&[13]),
        ],
        &[None, some(&[40]), some(&[42]), None],
        &[None, some(&[0xff]), None, None, some(&[2; 40])],
        &[None, Some(empty_list.clone()), Some(empty_list.clone())],
    );
    assert_eq!(store.prekey_count().await.expect("count"), 2);
    assert_eq!(store.signed_prekey(7).await.expect("get"), None);
    assert_eq!(store.session_count().await.expect("count"), 5);
    assert_eq!(
        store.sessions_for(&n.alice_user).await.expect("for"),
        [
            (n.alice1.clone(), vec![13]),
            (n.alice_bare.clone(), vec![19]),
            (n.alice_agent.clone(), vec![12])
        ]
    );
    assert_eq!(
        store.phone_for_lid(&n.lid).await.expect("get"),
        None,
        "old pair gone"
    );
    assert_eq!(
        store.lid_for_phone(&n.alice_user).await.expect("get"),
        Some(new_lid.clone())
    );
    assert_eq!(
        store.load_pending().await.expect("load_pending"),
        [
            pending_message("first", 5),
            pending_message("third", 3),
            pending_message("fourth", 4)
        ]
    );

    // Every session of a user removed: none left for it.
    store
        .apply(&[
            Change::RemoveSession(n.alice1.clone()),
            Change::RemoveSession(n.alice_bare.clone()),
            Change::RemoveSession(n.alice_agent.clone()),
        ])
        .await
        .expect("apply");
    assert!(
        store
            .sessions_for(&n.alice_user)
            .await
            .expect("for")
            .is_empty()
    );
    assert_eq!(store.session_count().await.expect("count"), 2);

    // Logging out forgets every kind; twice is fine.
    store.delete().await.expect("delete");
    store.delete().await.expect("delete twice");
    let loaded = store.load_keys(&request).await.expect("load_keys");
    let none = Loaded::nothing_for(&request);
    assert_eq!(loaded.sessions, none.sessions);
    assert_eq!(loaded.sender_keys, none.sender_keys);
    assert_eq!(loaded.prekeys, none.prekeys);
    assert_eq!(loaded.device_lists, none.device_lists);
    assert!(store.load().await.expect("load").is_none());
    assert!(store.load_sent().await.expect("load_sent").is_empty());
    assert!(store.load_pending().await.expect("load_pending").is_empty());
    assert_eq!(store.prekey_count().await.expect("count"), 0);
    assert_eq!(store.session_count().await.expect("count"), 0);
    assert_eq!(store.signed_prekey(7).await.expect("get"), None);
    assert_eq!(store.identity(&n.bob0).await.expect("get"), None);
    assert_eq!(store.lid_for_phone(&n.alice_user).await.expect("get"), None);

    // Usable afterwards.
    store.apply(&every_kind(&n)).await.expect("apply again");
    assert_eq!(store.session_count().await.expect("count"), 6);
    store.delete().await.expect("delete");
}

/// LID mappings load by either identity (device parts ignored), in request order, absent ones
/// as `None`; a new pair for a phone number replaces the old one in both directions.
async fn lid_mappings(store: &impl Inspect) {
    let lid = jid("111111111111111@lid");
    let phone = jid("15551112222@s.whatsapp.net");
    let mut request = LoadRequest::default();
    request.lid_mappings = vec![
        jid("111111111111111:4@lid"),
        jid("15553334444@s.whatsapp.net"),
        jid("15551112222:4@s.whatsapp.net"),
    ];
    let loaded = store.load_keys(&request).await.expect("load mappings");
    assert_eq!(
        loaded.lid_mappings,
        Loaded::nothing_for(&request).lid_mappings
    );
    store
        .apply(&[Change::LidMapping {
            lid: lid.clone(),
            phone: phone.clone(),
        }])
        .await
        .expect("apply");
    let loaded = store.load_keys(&request).await.expect("load mappings");
    assert_eq!(
        loaded.lid_mappings,
        [
            (request.lid_mappings[0].clone(), Some(phone.clone())),
            (request.lid_mappings[1].clone(), None),
            (request.lid_mappings[2].clone(), Some(lid.clone())),
        ]
    );
    let moved = jid("222222222222222@lid");
    store
        .apply(&[Change::LidMapping {
            lid: moved.clone(),
            phone: phone.clone(),
        }])
        .await
        .expect("apply");
    let loaded = store.load_keys(&request).await.expect("load mappings");
    assert_eq!(loaded.lid_mappings[0].1, None, "old LID forgotten");
    assert_eq!(loaded.lid_mappings[2].1, Some(moved.clone()));

    // Privacy tokens: by contact user, replaced in place, absent ones as `None`.
    let token = |b: u8, t: u64| amarula_core::persist::TcToken {
        token: vec![b; 4],
        timestamp: t,
    };
    let mut request = LoadRequest::default();
    request.tc_tokens = vec![moved.clone(), phone.clone()];
    store
        .apply(&[
            Change::TcToken {
                user: moved.clone(),
                token: token(1, 100),
            },
            Change::TcToken {
                user: moved.clone(),
                token: token(2, 200),
            },
        ])
        .await
        .expect("apply tokens");
    let loaded = store.load_keys(&request).await.expect("load tokens");
    assert_eq!(
        loaded.tc_tokens,
        [(moved.clone(), Some(token(2, 200))), (phone.clone(), None)]
    );
    store.delete().await.expect("delete");
    let loaded = store.load_keys(&request).await.expect("load tokens");
    assert_eq!(loaded.tc_tokens, Loaded::nothing_for(&request).tc_tokens);
}

/// Two stores (two accounts of one file, or two memory stores) share nothing.
/// Message secrets are kept by (chat, author, id), replaced in place, answered in request order
/// (absent ones as `None`).
async fn message_secrets(store: &impl Inspect) {
    use amarula_core::persist::SecretKey;
    let key = |chat: &str, author: &str, id: &str| SecretKey {
        chat: jid(chat),
        author: jid(author),
        id: id.to_owned(),
    };
    let poll = key(
        "120363041234567890@g.us",
        "15551234567@s.whatsapp.net",
        "P1",
    );
    let dm = key(
        "15557654321@s.whatsapp.net",
        "15557654321@s.whatsapp.net",
        "P2",
    );
    let lid = key("120363041234567890@g.us", "123456789012345@lid", "P1");
    store
        .apply(&[
            Change::MessageSecret {
                key: poll.clone(),
                record: vec![1; 40],
            },
            Change::MessageSecret {
                key: dm.clone(),
                record: vec![2; 40],
            },
            Change::MessageSecret {
                key: poll.clone(),
                record: vec![3; 41],
            },
        ])
        .await
        .expect("apply secrets");
    let mut request = LoadRequest::default();
    request.message_secrets = vec![lid.clone(), dm.clone(), poll.clone()];
    let loaded = store.load_keys(&request).await.expect("load secrets");
    assert_eq!(
        loaded.message_secrets,
        vec![
            (lid, None),
            (dm, Some(vec![2; 40])),
            (poll, Some(vec![3; 41]))
        ],
        "message secrets"
    );
}

// ---- app state (syncd) ----
/// App-state keys are kept by id (replaced in place); a collection's delta replaces or updates
/// its value MACs, version and LTHash; `delete` forgets both.
async fn app_state(store: &impl Inspect) {
    use amarula_core::appstate::{Collection, CollectionState, LtHash, SyncKey};
    use amarula_core::persist::AppStateDelta;
    let key = |id: u8, data: u8, timestamp| SyncKey {
        id: vec![0, id],
        data: vec![data; 32],
        timestamp,
    };
    let hash = |b: u8| LtHash([b; 128]);
    let delta = |c, version, h, replace, removed: Vec<[u8; 32]>, added| {
        Change::AppStateCollection(Box::new(AppStateDelta {
            collection: c,
            version,
            hash: hash(h),
            replace,
            removed,
            added,
        }))
    };
    assert!(store.load_app_state().await.expect("empty").keys.is_empty());
    store
        .apply(&[
            Change::AppStateSyncKey(key(1, 1, 10)),
            Change::AppStateSyncKey(key(2, 2, 20)),
            Change::AppStateSyncKey(key(1, 3, 30)),
            delta(
                Collection::RegularLow,
                5,
                1,
                true,
                vec![],
                vec![([1; 32], [11; 32]), ([2; 32], [22; 32])],
            ),
            delta(
                Collection::Regular,
                1,
                9,
                true,
                vec![],
                vec![([1; 32], [99; 32])],
            ),
            delta(
                Collection::RegularLow,
                6,
                2,
                false,
                vec![[1; 32]],
                vec![([3; 32], [33; 32]), ([2; 32], [23; 32])],
            ),
        ])
        .await
        .expect("apply app state");
    let mut got = store.load_app_state().await.expect("load app state");
    got.keys.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        got.keys,
        vec![key(1, 3, 30), key(2, 2, 20)],
        "app-state keys"
    );
    got.collections.sort_by_key(|(c, _)| *c);
    let mut low = CollectionState {
        version: 6,
        hash: hash(2),
        ..Default::default()
    };
    low.macs.insert([2; 32], [23; 32]);
    low.macs.insert([3; 32], [33; 32]);
    let mut regular = CollectionState {
        version: 1,
        hash: hash(9),
        ..Default::default()
    };
    regular.macs.insert([1; 32], [99; 32]);
    assert_eq!(
        got.collections,
        vec![
            (Collection::RegularLow, low),
            (Collection::Regular, regular)
        ],
        "app-state collections"
    );
    // A reset (recovery) empties the collection.
    store
        .apply(&[delta(Collection::RegularLow, 0, 0, true, vec![], vec![])])
        .await
        .expect("reset");
    let got = store.load_app_state().await.expect("load app state");
    let low = got
        .collections
        .iter()
        .find(|(c, _)| *c == Collection::RegularLow)
        .expect("low");
    assert_eq!(low.1, CollectionState::default());
    store.delete().await.expect("delete");
    let got = store.load_app_state().await.expect("load app state");
    assert!(got.keys.is_empty() && got.collections.is_empty());
}

/// Sent messages without [`Change::SentAcked`] are the outbox; a message relayed again is
/// unacknowledged again.
async fn unacked_sent(store: &impl Inspect) {
    let sent = |id: &str, t: u64| SentMessage {
        id: id.to_owned(),
        to: "15550001111@s.whatsapp.net".parse().expect("jid"),
        kind: "text".into(),
        context: bytes::Bytes::from_static(b"m1"),
        sent_unix_ms: t,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    store
        .apply(&[
            Change::SentMessage(sent("s1", now)),
            Change::SentMessage(sent("s2", now + 1)),
            Change::SentMessage(sent("s3", now + 2)),
            Change::SentAcked("s2".into()),
            Change::SentAcked("never-sent".into()),
        ])
        .await
        .expect("apply");
    let ids = |v: Vec<SentMessage>| v.into_iter().map(|m| m.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.load_unacked_sent().await.expect("unacked")),
        ["s1", "s3"]
    );
    store
        .apply(&[
            Change::SentAcked("s1".into()),
            Change::SentMessage(sent("s2", now + 3)),
        ])
        .await
        .expect("apply");
    assert_eq!(
        ids(store.load_unacked_sent().await.expect("unacked")),
        ["s3", "s2"]
    );
    assert_eq!(ids(store.load_sent().await.expect("sent")).len(), 3);
    store.delete().await.expect("delete");
}

pub(crate) async fn kept_apart(a: &impl Inspect, b: &impl Inspect) {
    let n = names();
    a.apply(&every_kind(&n)).await.expect("apply a");
    b.apply(&[
        Change::Session {
            address: n.alice1.clone(),
            record: vec![99],
        },
        Change::Pending(pending_message("b-only", 9)),
    ])
    .await
    .expect("apply b");
    let request = request(&n);
    let from_b = b.load_keys(&request).await.expect("load_keys b");
    let mut sessions = vec![None; request.sessions.len()];
    sessions[1] = some(&[99]);
    sessions[8] = some(&[99]);
    assert_loaded(
        &from_b,
        &request,
        &sessions,
        &[None, None, None, None],
        &[None, None, None, None, None],
        &[None, None, None],
    );
    assert_eq!(
        b.load_pending().await.expect("pending b"),
        [pending_message("b-only", 9)]
    );
    assert!(b.load().await.expect("load b").is_none());
    assert!(b.load_sent().await.expect("load_sent b").is_empty());
    assert_eq!(b.session_count().await.expect("count b"), 1);
    assert_eq!(a.session(&n.alice1).await.expect("a"), some(&[11]));
    assert_eq!(a.load_pending().await.expect("pending a").len(), 3);
    // Deleting one leaves the other.
    b.delete().await.expect("delete b");
    assert_eq!(a.session_count().await.expect("count a"), 6);
    assert!(a.load().await.expect("load a").is_some());
    let from_a = a.load_keys(&request).await.expect("load_keys a");
    assert_eq!(from_a.prekeys[1], (u32::MAX, some(&[0xff])));
    a.delete().await.expect("delete a");
}

#[test]
fn memory_store_conforms() {
    smol::block_on(async {
        contract(&MemoryStore::new(), true).await;
        conformance(&MemoryStore::new()).await;
        kept_apart(&MemoryStore::new(), &MemoryStore::new()).await;
    });
}

#[test]
fn memory_store_clones_share() {
    smol::block_on(async {
        let store = MemoryStore::new();
        let clone = store.clone();
        clone
            .apply(&[Change::PreKey {
                id: 4,
                record: vec![4],
            }])
            .await
            .expect("apply");
        assert_eq!(store.prekey(4), some(&[4]));
        // Records never show in the debug form.
        let debug = format!("{store:?}");
        assert!(debug.contains("prekeys: 1"), "{debug}");
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_store_conforms() {
    use super::{DEFAULT_ACCOUNT, SqliteDatabase, SqliteStore};
    use crate::store::testutil::TempDir;
    smol::block_on(async {
        let db = SqliteDatabase::open_in_memory().expect("open");
        let store = db.account(DEFAULT_ACCOUNT).expect("account");
        conformance(&store).await;
        kept_apart(&db.account("a").expect("a"), &db.account("b").expect("b")).await;
    });
    let dir = TempDir::new("conformance");
    let path = dir.0.join("c.db");
    smol::block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        conformance(&store).await;
        let db = store.database();
        kept_apart(&db.account("a").expect("a"), &db.account("b").expect("b")).await;
    });
    // What one run wrote, the next reads: keys round-trip through the file exactly.
    let n = names();
    smol::block_on(async {
        let store = SqliteStore::open(&path).expect("open");
        store.apply(&every_kind(&n)).await.expect("apply");
    });
    smol::block_on(async {
        let store = SqliteStore::open(&path).expect("reopen");
        let request = request(&n);
        let loaded = store.load_keys(&request).await.expect("load_keys");
        assert_eq!(loaded.sessions[2], (n.alice0.clone(), some(&[10])));
        assert_eq!(loaded.sessions[4], (n.alice_bare.clone(), some(&[19])));
        assert_eq!(store.load_pending().await.expect("load_pending").len(), 3);
    });
}

/// The trait's defaults: a store that keeps only credentials answers every key as absent, has
/// nothing pending, and refuses Signal state whole.
#[test]
fn a_store_without_signal_state_answers_nothing() {
    struct CredentialsOnly;
    impl CredentialStore for CredentialsOnly {
        async fn load(&self) -> Result<Option<amarula_core::credentials::Credentials>, StoreError> {
            Ok(None)
        }
        async fn save(&self, _: &amarula_core::credentials::Credentials) -> Result<(), StoreError> {
            Ok(())
        }
        async fn save_sent(&self, _: &SentMessage) -> Result<(), StoreError> {
            Ok(())
        }
        async fn delete(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }
    smol::block_on(async {
        let n = names();
        let request = request(&n);
        let loaded = CredentialsOnly
            .load_keys(&request)
            .await
            .expect("load_keys");
        assert_loaded(
            &loaded,
            &request,
            &vec![None; 9],
            &[None, None, None, None],
            &[None, None, None, None, None],
            &[None, None, None],
        );
        assert!(
            CredentialsOnly
                .load_pending()
                .await
                .expect("load_pending")
                .is_empty()
        );
        assert!(matches!(
            CredentialsOnly.apply(&every_kind(&n)).await,
            Err(StoreError::Unsupported("prekeys"))
        ));
    });
}
