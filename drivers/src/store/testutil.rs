//! Helpers shared by the store tests.

use std::path::PathBuf;

use amarula_core::credentials::{Credentials, DeviceIdentity};
use bytes::Bytes;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::credentials_to_json;

pub(crate) fn credentials(seed: u8) -> Credentials {
    Credentials::generate(&mut ChaCha20Rng::from_seed([seed; 32]))
}

pub(crate) fn paired(seed: u8) -> Credentials {
    let mut c = credentials(seed);
    c.device = Some(DeviceIdentity {
        jid: "15551234567:7@s.whatsapp.net".parse().expect("valid"),
        lid: Some("123456789012345:7@lid".parse().expect("valid")),
        account: Bytes::from_static(b"account"),
        platform: "android".into(),
        business_name: Some("Shop".into()),
    });
    c.own_lid = Some("123456789012345@lid".parse().expect("valid"));
    c.push_name = Some("amarula".into());
    c.routing_info = Some(Bytes::from_static(&[8, 1, 8, 5]));
    c
}

/// A fresh directory under the system temp dir, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("amarula-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn same(a: &Credentials, b: &Credentials) -> bool {
    credentials_to_json(a) == credentials_to_json(b)
}

/// A sent message numbered `n`, relayed in 2096 (so no age limit drops it).
pub(crate) fn sent(n: u64) -> amarula_core::machine::SentMessage {
    amarula_core::machine::SentMessage {
        id: format!("m{n}"),
        to: "15550001111@s.whatsapp.net".parse().expect("valid"),
        kind: "text".into(),
        context: Bytes::from(format!("ctx{n}")),
        sent_unix_ms: 4_000_000_000_000 + n,
    }
}

/// The contract every [`CredentialStore`](super::CredentialStore) keeps; `keeps_sent` says
/// whether the store records sent messages.
pub(crate) async fn contract(store: &impl super::CredentialStore, keeps_sent: bool) {
    use super::{Change, StoreError};
    assert!(store.load().await.expect("load").is_none(), "starts empty");
    assert!(store.load_sent().await.expect("load_sent").is_empty());
    let first = credentials(40);
    store.save(&first).await.expect("save");
    assert!(same(
        &first,
        &store.load().await.expect("load").expect("present")
    ));
    // A save replaces.
    let second = paired(41);
    store.save(&second).await.expect("save");
    let loaded = store.load().await.expect("load").expect("present");
    assert!(same(&second, &loaded));
    assert_eq!(loaded.device, second.device);
    // Sent messages come back oldest first; saving an id again moves it last.
    for n in 0..3 {
        store.save_sent(&sent(n)).await.expect("save_sent");
    }
    store.save_sent(&sent(0)).await.expect("save_sent again");
    let ids: Vec<String> = store
        .load_sent()
        .await
        .expect("load_sent")
        .into_iter()
        .map(|m| m.id)
        .collect();
    if keeps_sent {
        assert_eq!(ids, ["m1", "m2", "m0"]);
        assert_eq!(store.load_sent().await.expect("load_sent")[2], sent(0));
    } else {
        assert!(ids.is_empty());
    }
    // A batch of credentials and a sent message.
    let third = paired(42);
    store
        .apply(&[
            Change::Credentials(Box::new(third.clone())),
            Change::SentMessage(sent(9)),
        ])
        .await
        .expect("apply");
    assert!(same(
        &third,
        &store.load().await.expect("load").expect("present")
    ));
    if keeps_sent {
        let last = store.load_sent().await.expect("load_sent").pop();
        assert_eq!(last.map(|m| m.id).as_deref(), Some("m9"));
    }
    // An empty batch is fine.
    store.apply(&[]).await.expect("empty batch");
    // Delete forgets everything, twice is fine.
    store.delete().await.expect("delete");
    assert!(store.load().await.expect("load").is_none());
    assert!(store.load_sent().await.expect("load_sent").is_empty());
    store.delete().await.expect("delete twice");
    // What a store cannot keep is refused as a whole, not dropped.
    let session = Change::Session {
        address: "15550001111:1@s.whatsapp.net".parse().expect("valid"),
        record: vec![1],
    };
    match store
        .apply(&[Change::Credentials(Box::new(first.clone())), session])
        .await
    {
        Ok(()) => {}
        Err(StoreError::Unsupported("sessions")) => {
            assert!(
                store.load().await.expect("load").is_none(),
                "nothing written"
            );
        }
        Err(e) => panic!("unexpected {e}"),
    }
}
