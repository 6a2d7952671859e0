//! App-state benchmark (`cargo bench -p amarula-core --bench appstate`).
//!
//! - `apply_snapshot_10000`: a 10,000-record snapshot (contact names, as a phone sends its
//!   address book) decoded with every check (value MAC, AES-256-CBC decryption, protobuf
//!   decode, index MAC, the LTHash over all value MACs, the snapshot MAC), turned into typed
//!   actions, and applied to an empty collection state.

use std::hint::black_box;

use amarula_core::appstate::{
    AppStateAction, Collection, CollectionState, KeyRing, Operation, PendingMutation, SyncKey,
    decode_snapshot, encode_snapshot,
};
use amarula_proto::sync_action::{ContactAction, SyncActionValue};
use divan::Bencher;
use divan::counter::ItemsCount;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn main() {
    divan::main();
}

const RECORDS: usize = 10_000;

#[divan::bench(sample_count = 10)]
fn apply_snapshot_10000(bencher: Bencher<'_, '_>) {
    let mut keys = KeyRing::new();
    keys.insert(&SyncKey {
        id: vec![0, 0, 0, 1],
        data: vec![9; 32],
        timestamp: 1,
    });
    let records: Vec<PendingMutation> = (0..RECORDS)
        .map(|i| PendingMutation {
            operation: Operation::Set,
            index: vec!["contact".into(), format!("1555{i:07}@s.whatsapp.net")],
            version: 2,
            value: SyncActionValue {
                timestamp: Some(1_700_000_000_000),
                contact_action: Some(ContactAction {
                    full_name: Some(format!("Contact Number {i}")),
                    first_name: Some("Contact".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        })
        .collect();
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (snapshot, _) = encode_snapshot(
        Collection::CriticalUnblockLow,
        1,
        &keys,
        &[0, 0, 0, 1],
        &records,
        &mut rng,
    )
    .expect("encode");
    bencher.counter(ItemsCount::new(RECORDS)).bench_local(|| {
        let d = decode_snapshot(Collection::CriticalUnblockLow, &snapshot, &keys).expect("decode");
        let actions: Vec<AppStateAction> = d.mutations.iter().map(|m| m.action()).collect();
        let mut state = CollectionState::default();
        state.apply(&d);
        black_box((actions, state))
    });
}
