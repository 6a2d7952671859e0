//! The LTHash ("WhatsApp Patch Integrity"): a 128-byte sum over the value MACs a collection
//! holds. Adding a value MAC adds its 128-byte HKDF expansion word by word (64 little-endian
//! u16 words, wrapping); removing it subtracts the same expansion, so the sum depends only on the
//! set of live values, not on the order they arrived in.

use hkdf::Hkdf;
use sha2::Sha256;

/// HKDF info string of the app-state LTHash.
const INFO: &[u8] = b"WhatsApp Patch Integrity";

/// Size of the hash in bytes.
pub const LTHASH_LEN: usize = 128;

/// The running integrity hash of one collection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct LtHash(pub [u8; LTHASH_LEN]);

impl Default for LtHash {
    fn default() -> Self {
        Self([0; LTHASH_LEN])
    }
}

impl std::fmt::Debug for LtHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LtHash(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

fn expand(value_mac: &[u8]) -> [u8; LTHASH_LEN] {
    let mut out = [0u8; LTHASH_LEN];
    // 128 bytes is far below HKDF-SHA256's output limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, value_mac).expand(INFO, &mut out);
    out
}

impl LtHash {
    /// Adds one value MAC to the set.
    pub fn add(&mut self, value_mac: &[u8]) {
        let e = expand(value_mac);
        for (w, d) in self.0.chunks_exact_mut(2).zip(e.chunks_exact(2)) {
            let v = u16::from_le_bytes([w[0], w[1]]).wrapping_add(u16::from_le_bytes([d[0], d[1]]));
            w.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Removes one value MAC from the set.
    pub fn remove(&mut self, value_mac: &[u8]) {
        let e = expand(value_mac);
        for (w, d) in self.0.chunks_exact_mut(2).zip(e.chunks_exact(2)) {
            let v = u16::from_le_bytes([w[0], w[1]]).wrapping_sub(u16::from_le_bytes([d[0], d[1]]));
            w.copy_from_slice(&v.to_le_bytes());
        }
    }

    /// Builds a hash from stored bytes; `None` unless exactly [`LTHASH_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }
}
