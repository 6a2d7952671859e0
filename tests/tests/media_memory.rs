//! Peak memory of a 200 MiB media file sent and received through the real tokio driver and
//! the simulator's media host over loopback: a counting global allocator records the peak of
//! live heap bytes in the whole process (clients, simulator, HTTP) around the upload and
//! around the download. The client streams both ways through fixed buffers (the file is
//! encrypted into a temporary file, uploaded from it, and decrypted on the fly into the
//! destination file), so the only large allocation is the simulator's copy of the upload.
//! The figures are printed (run with `--nocapture`) and go in the README.

// A global allocator needs `unsafe impl GlobalAlloc`; this test binary does it only to count
// live heap bytes around the system allocator.
#![allow(
    unsafe_code,
    reason = "a counting global allocator needs `unsafe impl GlobalAlloc`"
)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use amarula::core::content::{Content, MediaKind};
use amarula::core::jid::Jid;
use amarula::core::machine::{Confirm, Event, IncomingMessage};
use amarula::media::{MediaConfig, OutgoingMedia};
use amarula::store::MemoryStore;
use amarula::{Client, ClientConfig, ClientEvent, Events};
use amarula_tests::runtimes::{Runtime as Rt, Tokio};
use amarula_tests::sim::client::{config_for, fresh_credentials};
use amarula_tests::sim::{SimConfig, Simulator};
use sha2::{Digest, Sha256};

/// Live heap bytes of the process, and their peak since the last [`reset_peak`].
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

struct Counting;

fn count(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    if delta > 0 {
        PEAK.fetch_max(now, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees on `layout` are passed on as they are.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through this wrapper).
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's guarantees are passed on; `ptr` came from `System`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts a new peak measurement; returns the live bytes now (its base).
fn reset_peak() -> isize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

fn peak_since(base: isize) -> isize {
    PEAK.load(Ordering::Relaxed) - base
}

const SIZE: usize = 200 << 20;
const MIB: f64 = (1 << 20) as f64;
/// What the client may add to the peak on either side: its fixed buffers, the HTTP client's,
/// the messages; far below the file.
const CLIENT_BUDGET: isize = 16 << 20;
const WAIT: Duration = Duration::from_secs(300);

/// Writes `SIZE` deterministic bytes to `path` in 1 MiB chunks; returns their SHA-256.
fn write_file(path: &std::path::Path) -> [u8; 32] {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut sha = Sha256::new();
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..SIZE / chunk.len() {
        // Each chunk differs (its number in front, its own fill byte), cheaply in a debug build.
        chunk.fill((i as u8).wrapping_mul(17));
        chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        sha.update(&chunk);
        file.write_all(&chunk).unwrap();
    }
    file.flush().unwrap();
    sha.finalize().into()
}

fn sha_of(path: &std::path::Path) -> [u8; 32] {
    let mut file = std::fs::File::open(path).unwrap();
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    sha.finalize().into()
}

struct Device {
    client: Client,
    events: Events,
}

impl Device {
    async fn start<R: Rt>(sim: &Simulator, phone: &str, seed: u8) -> Self {
        let account = sim.account(phone).unwrap_or_else(|| sim.add_account(phone));
        let mut creds = fresh_credentials(seed);
        creds.device = Some(account.link_device(&creds));
        let mut machine = config_for(sim);
        machine.prekey_upload_count = 20;
        let config = ClientConfig {
            url: sim.url(),
            machine,
            close_timeout: Duration::from_millis(200),
            media: MediaConfig {
                scheme: "http".into(),
                backoff: Duration::from_millis(5),
                ..MediaConfig::default()
            },
            ..ClientConfig::default()
        };
        let (client, events) = R::connect(config, MemoryStore::with_credentials(creds))
            .await
            .unwrap();
        let mut d = Self { client, events };
        d.until(|e| matches!(e, ClientEvent::Event(Event::PreKeysUploaded { .. })).then_some(()))
            .await;
        d
    }

    async fn until<T>(&mut self, mut pred: impl FnMut(ClientEvent) -> Option<T>) -> T {
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
                _ => panic!("nothing within {WAIT:?}"),
            }
        }
    }
}

async fn two_hundred_mib(sim: &Simulator) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.bin");
    let output = dir.path().join("received.bin");
    let sha = write_file(&input);
    let alice = Device::start::<Tokio>(sim, "15550007777", 47).await;
    let mut bob = Device::start::<Tokio>(sim, "15550008888", 48).await;
    let bob_jid: Jid = "15550008888@s.whatsapp.net".parse().unwrap();

    let base = reset_peak();
    alice
        .client
        .send_media(
            &bob_jid,
            OutgoingMedia::from_file(MediaKind::Document, &input, "application/octet-stream")
                .file_name("big.bin"),
        )
        .await
        .unwrap();
    let upload_peak = peak_since(base);

    let m: IncomingMessage = bob
        .until(|e| match e {
            ClientEvent::Event(Event::Message(m)) => Some(*m),
            _ => None,
        })
        .await;
    if let Some(token) = m.ack {
        bob.client.confirm(token, Confirm::Ack).await.unwrap();
    }
    let Content::Media(media) = &m.content else {
        panic!("not media: {:?}", m.content);
    };
    assert_eq!(media.reference.file_length, SIZE as u64);

    let base = reset_peak();
    let n = bob
        .client
        .download_to_file(&media.reference, MediaKind::Document, &output, |_, _| {})
        .await
        .unwrap();
    let download_peak = peak_since(base);
    assert_eq!(n, SIZE as u64);
    assert_eq!(sha_of(&output), sha, "the received file is the sent one");

    // The simulator keeps the uploaded blob (the file, padded, plus the 10-byte MAC) in one
    // allocation of exactly its length; everything else is the client's.
    let blob = (SIZE + 16 + 10) as isize;
    println!(
        "200 MiB file: upload peak {:.1} MiB above the start (the simulator's {:.1} MiB copy \
         of the blob + {:.2} MiB), download peak {:.2} MiB",
        upload_peak as f64 / MIB,
        blob as f64 / MIB,
        (upload_peak - blob) as f64 / MIB,
        download_peak as f64 / MIB,
    );
    assert!(
        upload_peak - blob < CLIENT_BUDGET,
        "upload held {:.1} MiB beyond the simulator's copy",
        (upload_peak - blob) as f64 / MIB
    );
    assert!(
        download_peak < CLIENT_BUDGET,
        "download held {:.1} MiB",
        download_peak as f64 / MIB
    );
}

#[test]
fn two_hundred_mib_through_fixed_buffers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(Simulator::start(SimConfig::default())).unwrap();
    Tokio::block_on(&rt, two_hundred_mib(&sim));
    sim.shutdown();
}
