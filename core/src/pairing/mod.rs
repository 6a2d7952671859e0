//! Pairing (helper in progress).
