use super::*;
use crate::binary::Node;
use crate::jid::Jid;
use crate::time::Instant;

const KEY: [u8; 32] = [1; 32];
const FILE: &[u8] = b"hello media, this is 37 bytes long!!!";

fn h32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

/// Computed with Node.js crypto (hkdfSync, aes-256-cbc, HMAC-SHA256) from SESSION.md §12.
fn known() -> (Vec<u8>, FileHashes) {
    (
        hex::decode(
            "61a5d749f4f84f706578c0eac4831ccda4f1949d843dfee86f0eac482b60a0df\
             633719d4c1b1149fde4567a28ae338e16c0b9a947970352b565b",
        )
        .expect("hex"),
        FileHashes::new(
            h32("e3e78df890f325bba6c54b075608dc4d85b689b6bd82e4f2f2a1f26e1f062415"),
            h32("1a78bd2734abb2f32e5613743dcdea6fc70bb7e78f4f8bb45a22301320ec7a70"),
            37,
        ),
    )
}

#[test]
fn matches_an_independent_implementation() {
    let (blob, hashes) = known();
    let (ours, our_hashes) = encrypt(&KEY, MediaType::Image, FILE);
    assert_eq!(ours, blob);
    assert_eq!(our_hashes, hashes);
    assert_eq!(
        decrypt(&KEY, MediaType::Image, &hashes, &blob).as_deref(),
        Ok(FILE)
    );
}

#[test]
fn streaming_in_any_piece_size_gives_the_same_bytes() {
    let file: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
    for len in [0usize, 1, 15, 16, 17, 31, 32, 33, 4999, 5000] {
        let file = &file[..len];
        let (whole, hashes) = encrypt(&KEY, MediaType::Video, file);
        assert_eq!(hashes.file_length, len as u64);
        assert_eq!((whole.len() - MAC_LEN) % 16, 0);
        for piece in [1usize, 3, 16, 17, 64, 1000] {
            let mut enc = Encryptor::new(&KEY, MediaType::Video);
            let mut out = Vec::new();
            for chunk in file.chunks(piece) {
                enc.update(chunk, &mut out);
            }
            assert_eq!(enc.finish(&mut out), hashes, "len {len} piece {piece}");
            assert_eq!(out, whole);
            let mut dec = Decryptor::new(&KEY, MediaType::Video, hashes.clone());
            let mut plain = Vec::new();
            for chunk in whole.chunks(piece) {
                dec.update(chunk, &mut plain).expect("update");
            }
            dec.finish(&mut plain).expect("finish");
            assert_eq!(plain, file, "len {len} piece {piece}");
        }
    }
}

#[test]
fn checks_run_in_order() {
    let (blob, hashes) = known();
    let stream = |blob: &[u8], hashes: &FileHashes| {
        let mut dec = Decryptor::new(&KEY, MediaType::Image, hashes.clone());
        let mut out = Vec::new();
        dec.update(blob, &mut out)?;
        dec.finish(&mut out).map(|()| out)
    };
    let both = |blob: &[u8], hashes: &FileHashes| {
        let a = decrypt(&KEY, MediaType::Image, hashes, blob).map(|_| ());
        let b = stream(blob, hashes).map(|_| ());
        assert_eq!(a, b);
        a
    };
    // A flipped ciphertext byte: the blob's hash fails first.
    let mut bad = blob.clone();
    bad[3] ^= 1;
    assert_eq!(both(&bad, &hashes), Err(MediaError::EncHash));
    // The same with the hash updated: the MAC fails.
    let mut h = hashes.clone();
    h.file_enc_sha256 = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &bad,
    ))
    .into();
    assert_eq!(both(&bad, &h), Err(MediaError::Mac));
    // Wrong key type: the MAC fails.
    assert_eq!(
        decrypt(&KEY, MediaType::Video, &hashes, &blob),
        Err(MediaError::Mac)
    );
    // The right blob, the wrong file hash or length.
    let mut h = hashes.clone();
    h.file_sha256[0] ^= 1;
    assert_eq!(both(&blob, &h), Err(MediaError::FileHash));
    let mut h = hashes.clone();
    h.file_length = 36;
    assert_eq!(
        decrypt(&KEY, MediaType::Image, &h, &blob),
        Err(MediaError::FileLength)
    );
    // Bad lengths.
    assert_eq!(both(&blob[..20], &hashes), Err(MediaError::Length));
    assert_eq!(
        both(&blob[..blob.len() - 1], &hashes),
        Err(MediaError::Length)
    );
    // More than the file length allows is refused as it arrives.
    let mut dec = Decryptor::new(&KEY, MediaType::Image, hashes);
    let mut out = Vec::new();
    assert_eq!(
        dec.update(&[0u8; 37 + 16 + MAC_LEN + 1], &mut out),
        Err(MediaError::TooLarge)
    );
}

#[test]
fn urls() {
    let hash = [0xfbu8; 32];
    assert_eq!(
        upload_url(
            "https",
            "mmg.whatsapp.net",
            MediaType::Document,
            "a+b/c=",
            &hash
        ),
        format!(
            "https://mmg.whatsapp.net/mms/document/{t}?auth=a%2Bb%2Fc%3D&token={t}",
            t = enc_hash_token(&hash)
        )
    );
    assert!(!enc_hash_token(&hash).contains(['+', '/', '=']));
    assert_eq!(
        download_url(
            "http",
            "127.0.0.1:9",
            "/v/t62/x?ccb=1",
            MediaType::Audio,
            &hash
        ),
        format!(
            "http://127.0.0.1:9/v/t62/x?ccb=1&hash={}&mms-type=audio&__wa-mms=",
            enc_hash_token(&hash)
        )
    );
}

#[test]
fn media_conn_is_parsed_and_expires() {
    let req = media_conn_request();
    assert_eq!(req.node.attr_str("xmlns"), Some("w:m"));
    assert!(req.node.child("media_conn").is_some());
    let answer = Node::new("iq").children([Node::new("media_conn")
        .attr("auth", "AUTH")
        .attr("ttl", "300")
        .attr("auth_ttl", "21600")
        .children([
            Node::new("host").attr("hostname", "mmg.whatsapp.net"),
            Node::new("host").attr("hostname", "evil/path?x"),
            Node::new("host")
                .attr("hostname", "127.0.0.1:8081")
                .attr("maxContentLengthBytes", "1000"),
        ])]);
    let t0 = Instant::from_millis(1000);
    let conn = parse_media_conn(&answer, t0).expect("parsed");
    assert_eq!(
        conn.hosts.len(),
        2,
        "a host that is not a host name is dropped"
    );
    assert_eq!(conn.hosts[1].max_content_length, Some(1000));
    assert!(conn.is_fresh(t0 + std::time::Duration::from_secs(299)));
    assert!(!conn.is_fresh(t0 + std::time::Duration::from_secs(300)));
    assert!(!format!("{conn:?}").contains("AUTH"));
    let none = Node::new("iq").children([Node::new("media_conn").attr("auth", "A")]);
    assert_eq!(parse_media_conn(&none, t0), Err(MediaConnError::NoHosts));
    assert_eq!(
        parse_media_conn(&Node::new("iq"), t0),
        Err(MediaConnError::Missing)
    );
}

#[test]
fn re_upload_request_and_answer() {
    let own: Jid = "111:3@s.whatsapp.net".parse().expect("jid");
    let chat: Jid = "120363000000000001@g.us".parse().expect("jid");
    let sender: Jid = "222@s.whatsapp.net".parse().expect("jid");
    let receipt = retry_receipt("MID", &own, &chat, false, Some(&sender), &KEY, &[9; 12]);
    assert_eq!(receipt.attr_str("type"), Some("server-error"));
    assert_eq!(
        receipt.attr_jid("to").map(ToString::to_string).as_deref(),
        Some("111@s.whatsapp.net")
    );
    // The phone reads it with the media key, not with another.
    assert_eq!(decrypt_retry_receipt(&receipt, &KEY).as_deref(), Ok("MID"));
    assert_eq!(
        decrypt_retry_receipt(&receipt, &[2; 32]),
        Err(MediaRetryError::Decrypt)
    );
    // Its answer.
    let outcome = MediaRetryOutcome::Uploaded {
        direct_path: "/v/new".into(),
    };
    let ct = encrypt_retry_answer("MID", &KEY, &[5; 12], &outcome);
    let notification = Node::new("notification")
        .attr("type", "mediaretry")
        .attr("id", "MID")
        .children([
            Node::new("encrypt").children([
                Node::new("enc_p").bytes(ct),
                Node::new("enc_iv").bytes(vec![5; 12]),
            ]),
            Node::new("rmr")
                .attr("jid", chat.clone())
                .attr("from_me", "false")
                .attr("participant", sender.clone()),
        ]);
    let retry = parse_retry_notification(&notification).expect("parsed");
    assert_eq!(
        (retry.chat.clone(), retry.participant.clone()),
        (chat, Some(sender))
    );
    assert_eq!(decrypt_retry_notification(&retry, &KEY), Ok(outcome));
    assert_eq!(
        decrypt_retry_notification(&retry, &[3; 32]),
        Err(MediaRetryError::Decrypt)
    );
    // The phone's error instead of an answer.
    let gone = Node::new("notification").attr("id", "MID").children([
        Node::new("rmr")
            .attr("jid", "1@s.whatsapp.net")
            .attr("from_me", "true"),
        Node::new("error").attr("code", "2"),
    ]);
    let retry = parse_retry_notification(&gone).expect("parsed");
    assert_eq!(
        decrypt_retry_notification(&retry, &KEY),
        Err(MediaRetryError::Phone(2))
    );
}
