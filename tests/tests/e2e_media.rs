//! Media end to end through the real drivers (tokio and smol) against the simulator's media
//! host over loopback HTTP: every kind uploaded encrypted by one client, sent, received by
//! another and downloaded, checked and decrypted (into memory and into a file through a fixed
//! buffer); a host error retried; an expired blob reported as gone, then uploaded again by
//! our own phone on request (the media re-upload round trip). Every wait is bounded.

use amarula::ClientError;
use amarula::core::content::{Content, Media, MediaKind};
use amarula::core::jid::Jid;
use amarula::core::machine::IncomingMessage;
use amarula::media::{MediaTransferError, OutgoingMedia};
use amarula_tests::e2e::{Device, Env, sim_wait};
use amarula_tests::runtimes::Runtime as Rt;
use amarula_tests::sim::{PhoneMediaKind, SimEvent};

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
    let alice = Device::start::<R>(env, "alice", "15550001111", 41).await;
    let mut bob = Device::start::<R>(env, "bob", "15550002222", 42).await;
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
        let m = bob.next_message().await;
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
    let alice = Device::start::<R>(env, "alice", "15550003333", 43).await;
    let mut bob = Device::start::<R>(env, "bob", "15550004444", 44).await;
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
    let m = bob.next_message().await;
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
    let alice = Device::start::<R>(env, "alice", "15550005555", 45).await;
    let mut bob = Device::start::<R>(env, "bob", "15550006666", 46).await;
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
    let m = bob.next_message().await;
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
    let alice = Device::start::<R>(env, "alice", "15550009991", 49).await;
    let mut bob = Device::start::<R>(env, "bob", "15550009992", 50).await;
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
        let m = bob.next_message().await;
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
    let message = sim_wait(&mut rx, "bob's phone decrypting the image", |e| match e {
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
    let _ = bob.next_message().await;
}

amarula_tests::on_both_drivers!(
    Env::new();
    every_kind,
    into_a_file_with_retries_and_expiry,
    expired_blob_uploaded_again,
    phones_send_and_fetch,
);
