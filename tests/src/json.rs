//! Reading fields of vector files: paths of object keys, hex strings, fixed-size byte arrays.
//! Errors are strings naming the path, for the report lines of the vector checkers.

use serde_json::Value;

/// Follows a path of object keys.
pub fn get<'a>(v: &'a Value, path: &[&str]) -> Result<&'a Value, String> {
    path.iter().try_fold(v, |v, k| {
        v.get(k)
            .ok_or_else(|| format!("missing field {}", path.join(".")))
    })
}

/// A hex string at `path`, decoded.
pub fn hex_at(v: &Value, path: &[&str]) -> Result<Vec<u8>, String> {
    let s = get(v, path)?
        .as_str()
        .ok_or_else(|| format!("{} is not a string", path.join(".")))?;
    hex::decode(s).map_err(|e| format!("{} is not hex: {e}", path.join(".")))
}

/// Exactly `N` hex-encoded bytes at `path`.
pub fn arr<const N: usize>(v: &Value, path: &[&str]) -> Result<[u8; N], String> {
    let b = hex_at(v, path)?;
    let len = b.len();
    b.try_into()
        .map_err(|_| format!("{} is {len} bytes, not {N}", path.join(".")))
}
