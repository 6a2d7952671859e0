//! Media end to end through the real drivers (tokio and smol) against the simulator's media
//! host over loopback HTTP: every kind uploaded encrypted by one client, sent, received by
//! another and downloaded, checked and decrypted (into memory and into a file through a fixed
//! buffer); a host error retried; an expired blob reported as gone, then uploaded again by
//! our own phone on request (the media re-upload round trip). Every wait is bounded.

use std::time::Duration;

use amarula::core::content::{Content, Media, MediaKind};
use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event, IncomingMessage};
use amarula::media::{MediaConfig, MediaTransferError, OutgoingMedia};
use amarula::store::MemoryStore;
use amarula::{Client, ClientConfig, ClientError, ClientEvent, Events};
use amarula_tests::e2e::sim_event;
use amarula_tests::runtimes::{Runtime as Rt, Smol, Tokio};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{PhoneMediaKind, SimConfig, SimEvent, Simulator};

const WAIT: Duration = Duration::from_secs(15);

struct Env {
    sim: Simulator,
    rt: tokio::runtime::Runtime,
}

impl Env {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt.block_on(Simulator::start(SimConfig::default())).unwrap();
        Self { sim, rt }
    }

    fn config(&self) -> ClientConfig {
        let mut machine = config_for(&self.sim);
        machine.prekey_upload_count = 20;
        ClientConfig {
            url: self.sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            media: MediaConfig {
                scheme: "http".into(),
                attempts: 3,
                backoff: Duration::from_millis(5),
                ..MediaConfig::default()
            },
            ..ClientConfig::default()
        }
    }

    fn linked(&self, phone: &str, seed: u8) -> MemoryStore {
        let account = self
            .sim
            .account(phone)
            .unwrap_or_else(|| self.sim.add_account(phone));
        let mut creds = fresh_credentials(seed);
        creds.device = Some(account.link_device(&creds));
        MemoryStore::with_credentials(creds)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.sim.shutdown();
    }
}

struct Device {
    client: Client,
    events: Events,
}

impl Device {
    async fn start<R: Rt>(env: &Env, phone: &str, seed: u8) -> Self {
        let (client, events) = R::connect(env.config(), env.linked(phone, seed))
            .await
            .unwrap();
        let mut d = Self { client, events };
        d.until("prekeys uploaded", |e| {
            matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(())
        })
        .await;
        d
    }

    async fn until<T>(&mut self, what: &str, mut pred: impl FnMut(ClientEvent) -> Option<T>) -> T {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let next = smol::future::or(async { self.events.recv().await.map(Some) }, async {
                smol::Timer::after(left).await;
                Some(None)
            })
            .await;
            match next {
                Some(Some(event)) => {
                    if let Some(t) = pred(event) {
                        return t;
                    }
                }
                _ => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The next message, confirmed.
    async fn message(&mut self) -> IncomingMessage {
        let m = self
            .until("a message", |e| match e {
                ClientEvent::Event(Event::Message(m)) => Some(*m),
                _ => None,
            })
            .await;
        if let Some(token) = m.ack {
            self.client.confirm(token, Confirm::Ack).await.unwrap();
        }
        m
    }
}

fn media_of(m: &IncomingMessage) -> &Media {
    match &m.content {
        Content::Media(media) => media,
        other => panic!("not media: {other:?}"),
    }
}

/// Deterministic bytes of a given length.
fn file(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

async fn every_kind<R: Rt>(env: &Env) {
    let alice = Device::start::<R>(env, "15550001111", 41).await;
    let mut bob = Device::start::<R>(env, "15550002222", 42).await;
    let bob_jid: Jid = "15550002222@s.whatsapp.net".parse().unwrap();
    let cases = [
        (
            MediaKind::Image,
            OutgoingMedia::image(file(30_000, 1), "image/jpeg")
                .caption("a picture")
                .dimensions(640, 480),
        ),
        (
            MediaKind::Video,
            OutgoingMedia::video(file(70_001, 2), "video/mp4").seconds(3),
        ),
        (
            MediaKind::Audio,
            OutgoingMedia::voice_note(
                file(5_000, 3),
                "audio/ogg; codecs=opus",
                2,
                Some(vec![7; 64]),
            ),
        ),
        (
            MediaKind::Document,
            OutgoingMedia::document(file(100, 4), "application/pdf", "report.pdf").page_count(2),
        ),
        (
            MediaKind::Sticker,
            OutgoingMedia::sticker(file(16, 5), false),
        ),
    ];
    for (i, (kind, outgoing)) in cases.into_iter().enumerate() {
        let data = file([30_000, 70_001, 5_000, 100, 16][i], [1, 2, 3, 4, 5][i]);
        alice.client.send_media(&bob_jid, outgoing).await.unwrap();
        let m = bob.message().await;
        let media = media_of(&m);
        assert_eq!(media.kind, Some(kind));
        assert_eq!(media.reference.file_length, data.len() as u64);
        match kind {
            MediaKind::Image => {
                assert_eq!(media.caption.as_deref(), Some("a picture"));
                assert_eq!((media.width, media.height), (Some(640), Some(480)));
            }
            MediaKind::Audio => assert!(media.ptt),
            MediaKind::Document => assert_eq!(media.file_name.as_deref(), Some("report.pdf")),
            _ => {}
        }
        let got = bob.client.download(&media.reference, kind).await.unwrap();
        assert_eq!(got, data, "{kind:?}");
    }
    let (uploads, downloads) = env.sim.media().counts();
    assert!(uploads >= 5 && downloads >= 5, "{uploads} {downloads}");
}

async fn into_a_file_with_retries_and_expiry<R: Rt>(env: &Env) {
    let alice = Device::start::<R>(env, "15550003333", 43).await;
    let mut bob = Device::start::<R>(env, "15550004444", 44).await;
    let bob_jid: Jid = "15550004444@s.whatsapp.net".parse().unwrap();
    // A host error on the upload is retried.
    env.sim.media().fail_next(1);
    let data = file(2 << 20, 9);
    alice
        .client
        .send_media(
            &bob_jid,
            OutgoingMedia::document(data.clone(), "application/octet-stream", "big.bin"),
        )
        .await
        .unwrap();
    let m = bob.message().await;
    let media = media_of(&m).reference.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    // And one on the download.
    env.sim.media().fail_next(1);
    let n = bob
        .client
        .download_to_file(&media, MediaKind::Document, &path, move |done, total| {
            s.lock().unwrap().push((done, total));
        })
        .await
        .unwrap();
    assert_eq!(n, data.len() as u64);
    assert_eq!(std::fs::read(&path).unwrap(), data);
    assert!(!dir.path().join("big.bin.part").exists());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 2, "progress reported along the way");
    assert_eq!(seen.last(), Some(&(data.len() as u64, data.len() as u64)));
    // Gone from the host: a typed error, and no file left.
    env.sim
        .media()
        .expire(media.direct_path.as_deref().unwrap());
    let gone = dir.path().join("gone.bin");
    let err = bob
        .client
        .download_to_file(&media, MediaKind::Document, &gone, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err, ClientError::Media(MediaTransferError::Gone(410)));
    assert!(!gone.exists() && !dir.path().join("gone.bin.part").exists());
}

async fn expired_blob_uploaded_again<R: Rt>(env: &Env) {
    let alice = Device::start::<R>(env, "15550005555", 45).await;
    let mut bob = Device::start::<R>(env, "15550006666", 46).await;
    let bob_jid: Jid = "15550006666@s.whatsapp.net".parse().unwrap();
    let data = file(40_000, 11);
    alice
        .client
        .send_media(
            &bob_jid,
            OutgoingMedia::image(data.clone(), "image/jpeg").caption("again"),
        )
        .await
        .unwrap();
    let m = bob.message().await;
    let media = media_of(&m).reference.clone();
    let old_path = media.direct_path.clone().unwrap();
    env.sim.media().expire(&old_path);
    let (uploads_before, _) = env.sim.media().counts();
    // Gone from the hosts: our phone (which saw the message) is asked to upload it again,
    // answers with the new path encrypted under the file's key, and the download succeeds.
    let got = bob
        .client
        .download_message_media(&m, &media, MediaKind::Image)
        .await
        .unwrap();
    assert_eq!(got, data);
    let (uploads_after, _) = env.sim.media().counts();
    assert_eq!(
        uploads_after,
        uploads_before + 1,
        "the phone uploaded it once more"
    );
    // Asked directly, the phone names a path other than the expired one.
    let request =
        amarula::core::machine::ReuploadRequest::new(m.id.clone(), m.chat.clone(), m.from_me, None);
    let path = bob
        .client
        .request_media_reupload(request, &media)
        .await
        .unwrap();
    assert_ne!(path, old_path);
    // A message our phone never saw: it says so (error code 2), typed.
    let unknown = amarula::core::machine::ReuploadRequest::new(
        "3EB0UNKNOWN0000",
        m.chat.clone(),
        false,
        None,
    );
    let err = bob
        .client
        .request_media_reupload(unknown, &media)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Reupload(reason) if reason.contains("code 2")),
        "{err:?}"
    );
    // A file whose request does not decrypt with the key the phone has: refused by the phone.
    let mut wrong = media.clone();
    wrong.media_key = vec![9u8; 32].into();
    let request =
        amarula::core::machine::ReuploadRequest::new(m.id.clone(), m.chat.clone(), m.from_me, None);
    let err = bob
        .client
        .request_media_reupload(request, &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Reupload(_)), "{err:?}");
}

/// Phones send every kind to a client, which downloads and checks each; a client's file is
/// fetched and checked by the recipient's phone.
async fn phones_send_and_fetch<R: Rt>(env: &Env) {
    let mut rx = env.sim.subscribe();
    let alice = Device::start::<R>(env, "15550009991", 49).await;
    let mut bob = Device::start::<R>(env, "15550009992", 50).await;
    let bob_jid: Jid = "15550009992@s.whatsapp.net".parse().unwrap();
    let alice_phone = env.sim.account("15550009991").unwrap();
    let cases = [
        (PhoneMediaKind::Image, MediaKind::Image, "image/jpeg"),
        (PhoneMediaKind::Video, MediaKind::Video, "video/mp4"),
        (
            PhoneMediaKind::VoiceNote,
            MediaKind::Audio,
            "audio/ogg; codecs=opus",
        ),
        (
            PhoneMediaKind::Document,
            MediaKind::Document,
            "application/pdf",
        ),
        (PhoneMediaKind::Sticker, MediaKind::Sticker, "image/webp"),
    ];
    for (i, (phone_kind, kind, mime)) in cases.into_iter().enumerate() {
        let data = file(10_000 + i * 3_333, 20 + i as u8);
        let id = alice_phone
            .phone_send_media(&bob_jid, phone_kind, &data, mime, Some("from the phone"))
            .unwrap();
        let m = bob.message().await;
        assert_eq!(m.id, id);
        let media = media_of(&m);
        assert_eq!(media.kind, Some(kind), "{phone_kind:?}");
        let got = bob.client.download(&media.reference, kind).await.unwrap();
        assert_eq!(got, data, "{phone_kind:?}");
    }
    // A client's file, fetched and checked by the recipient's phone.
    let data = file(12_345, 77);
    let id = alice
        .client
        .send_media(&bob_jid, OutgoingMedia::image(data.clone(), "image/png"))
        .await
        .unwrap();
    let message = sim_event(&mut rx, "bob's phone decrypting the image", |e| match e {
        SimEvent::PhoneMessage {
            account,
            id: i,
            message,
            ..
        } if account == "15550009992" && *i == id => Some((**message).clone()),
        _ => None,
    })
    .await;
    let bob_phone = env.sim.account("15550009992").unwrap();
    assert_eq!(bob_phone.phone_download(&message).unwrap(), data);
    let _ = bob.message().await;
}

#[test]
fn phones_send_and_fetch_tokio() {
    let env = Env::new();
    Tokio::block_on(&env.rt, phones_send_and_fetch::<Tokio>(&env));
}

#[test]
fn phones_send_and_fetch_smol() {
    let env = Env::new();
    Smol::block_on(&env.rt, phones_send_and_fetch::<Smol>(&env));
}

#[test]
fn expired_blob_uploaded_again_tokio() {
    let env = Env::new();
    Tokio::block_on(&env.rt, expired_blob_uploaded_again::<Tokio>(&env));
}

#[test]
fn expired_blob_uploaded_again_smol() {
    let env = Env::new();
    Smol::block_on(&env.rt, expired_blob_uploaded_again::<Smol>(&env));
}

#[test]
fn every_kind_tokio() {
    let env = Env::new();
    Tokio::block_on(&env.rt, every_kind::<Tokio>(&env));
}

#[test]
fn every_kind_smol() {
    let env = Env::new();
    Smol::block_on(&env.rt, every_kind::<Smol>(&env));
}

#[test]
fn into_a_file_with_retries_and_expiry_tokio() {
    let env = Env::new();
    Tokio::block_on(&env.rt, into_a_file_with_retries_and_expiry::<Tokio>(&env));
}

#[test]
fn into_a_file_with_retries_and_expiry_smol() {
    let env = Env::new();
    Smol::block_on(&env.rt, into_a_file_with_retries_and_expiry::<Smol>(&env));
}
