//! The attributes of an owned node: an ordered list of key/value pairs, the first few stored
//! inside the node itself.
//!
//! Most nodes carry one or two attributes (`<enc v type>`, `<item jid index>`, `<to jid>`), so
//! keeping those inline spares the decoder one allocation per node, which is most of what an
//! owned decode of a list costs. Stanza roots with more attributes spill to the heap once.

use std::fmt;
use std::ops::{Deref, DerefMut};

use smallvec::SmallVec;

use super::node::{AttrValue, NodeStr};

/// How many attributes live inside the node before the list moves to the heap. Two covers
/// the per-recipient and per-item nodes; a larger inline array makes every node bigger, and
/// moving nodes into their parent's child list then costs more than the spared allocations.
const INLINE: usize = 2;

/// One attribute: its key and its value.
pub type Attr = (NodeStr, AttrValue);

/// The attributes of a [`Node`](super::Node) in wire order.
///
/// It reads like the `Vec<(NodeStr, AttrValue)>` it replaces: it dereferences to a slice
/// (`iter`, `len`, `is_empty`, `first`, indexing, `iter_mut`, `sort_by`), has the vector's
/// `push`, `pop`, `insert`, `remove`, `swap_remove`, `retain`, `drain`, `truncate`, `clear`,
/// `reserve` and `extend`, compares equal to a `Vec` or slice of the same pairs, and is built
/// with `collect()`, `From<Vec<_>>` or `From<[_; N]>` (a struct literal that gave a `Vec` needs
/// `.into()`).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Attrs(SmallVec<[Attr; INLINE]>);

impl Attrs {
    /// An empty list (allocates nothing).
    pub const fn new() -> Self {
        Self(SmallVec::new_const())
    }

    /// An empty list with room for `capacity` attributes (allocates only past the inline ones).
    pub fn with_capacity(capacity: usize) -> Self {
        Self(SmallVec::with_capacity(capacity))
    }

    /// Appends an attribute. A key already present is not replaced: the wire keeps both, and
    /// lookups find the first.
    pub fn push(&mut self, attr: Attr) {
        self.0.push(attr);
    }

    /// Makes room for `additional` more attributes (allocates only past the inline ones).
    pub fn reserve(&mut self, additional: usize) {
        self.0.reserve(additional);
    }

    /// Inserts an attribute at `index`, shifting the later ones.
    ///
    /// # Panics
    /// When `index > len`, like [`Vec::insert`].
    pub fn insert(&mut self, index: usize, attr: Attr) {
        self.0.insert(index, attr);
    }

    /// Removes and returns the attribute at `index`.
    ///
    /// # Panics
    /// When `index >= len`, like [`Vec::remove`].
    pub fn remove(&mut self, index: usize) -> Attr {
        self.0.remove(index)
    }

    /// Keeps only the attributes for which `keep` returns true, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Attr) -> bool) {
        self.0.retain(|a| keep(a));
    }

    /// Removes and returns the last attribute.
    pub fn pop(&mut self) -> Option<Attr> {
        self.0.pop()
    }

    /// Removes the attribute at `index` and puts the last one in its place.
    ///
    /// # Panics
    /// When `index >= len`, like [`Vec::swap_remove`].
    pub fn swap_remove(&mut self, index: usize) -> Attr {
        self.0.swap_remove(index)
    }

    /// Removes the attributes in `range` and yields them.
    ///
    /// # Panics
    /// When the range is out of bounds, like [`Vec::drain`].
    pub fn drain(
        &mut self,
        range: impl std::ops::RangeBounds<usize>,
    ) -> impl DoubleEndedIterator<Item = Attr> + '_ {
        self.0.drain(range)
    }

    /// How many attributes fit without allocating again.
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }

    /// The attributes as a slice.
    pub fn as_slice(&self) -> &[Attr] {
        &self.0
    }

    /// The attributes as a mutable slice.
    pub fn as_mut_slice(&mut self) -> &mut [Attr] {
        &mut self.0
    }

    /// Keeps the first `len` attributes.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// Removes every attribute.
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The attributes as a vector.
    pub fn into_vec(self) -> Vec<Attr> {
        self.0.into_vec()
    }
}

impl Deref for Attrs {
    type Target = [Attr];

    fn deref(&self) -> &[Attr] {
        &self.0
    }
}

impl DerefMut for Attrs {
    fn deref_mut(&mut self) -> &mut [Attr] {
        &mut self.0
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl From<Vec<Attr>> for Attrs {
    fn from(v: Vec<Attr>) -> Self {
        Self(SmallVec::from_vec(v))
    }
}

impl<const N: usize> From<[Attr; N]> for Attrs {
    fn from(a: [Attr; N]) -> Self {
        a.into_iter().collect()
    }
}

impl From<Attrs> for Vec<Attr> {
    fn from(a: Attrs) -> Self {
        a.into_vec()
    }
}

impl FromIterator<Attr> for Attrs {
    fn from_iter<I: IntoIterator<Item = Attr>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Extend<Attr> for Attrs {
    fn extend<I: IntoIterator<Item = Attr>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl PartialEq<Vec<Attr>> for Attrs {
    fn eq(&self, other: &Vec<Attr>) -> bool {
        self[..] == other[..]
    }
}

impl PartialEq<[Attr]> for Attrs {
    fn eq(&self, other: &[Attr]) -> bool {
        self[..] == *other
    }
}

impl PartialEq<Attrs> for Vec<Attr> {
    fn eq(&self, other: &Attrs) -> bool {
        self[..] == other[..]
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = &'a Attr;
    type IntoIter = std::slice::Iter<'a, Attr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Attrs {
    type Item = &'a mut Attr;
    type IntoIter = std::slice::IterMut<'a, Attr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl IntoIterator for Attrs {
    type Item = Attr;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.0.into_iter())
    }
}

/// The attributes of an [`Attrs`] by value, in order.
pub struct IntoIter(smallvec::IntoIter<[Attr; INLINE]>);

impl Iterator for IntoIter {
    type Item = Attr;

    fn next(&mut self) -> Option<Attr> {
        self.0.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl DoubleEndedIterator for IntoIter {
    fn next_back(&mut self) -> Option<Attr> {
        self.0.next_back()
    }
}

impl ExactSizeIterator for IntoIter {}

impl fmt::Debug for IntoIter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.as_slice()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jid::Jid;

    fn a(k: &str, v: &str) -> Attr {
        (k.into(), v.into())
    }

    #[test]
    fn reads_like_a_vec() {
        let mut attrs = Attrs::new();
        attrs.push(a("id", "1"));
        attrs.push(a("type", "get"));
        attrs.push(("to".into(), Jid::server().into()));
        assert_eq!(attrs.len(), 3);
        assert_eq!(
            attrs,
            vec![
                a("id", "1"),
                a("type", "get"),
                ("to".into(), Jid::server().into())
            ]
        );
        attrs.retain(|(k, _)| k != "id");
        attrs.insert(0, a("id", "2"));
        assert_eq!(attrs[0], a("id", "2"));
        for (k, v) in &mut attrs {
            if k == "type" {
                *v = "set".into();
            }
        }
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["id", "type", "to"]);
        assert_eq!(attrs.remove(2).0, "to");
        let v: Vec<Attr> = attrs.clone().into();
        assert_eq!(Attrs::from(v.clone()), attrs);
        assert_eq!(
            attrs.clone().into_iter().rev().collect::<Vec<_>>(),
            v.into_iter().rev().collect::<Vec<_>>()
        );
        // Past the inline two, and back.
        attrs.extend([a("a", "1"), a("b", "2"), a("c", "3")]);
        assert_eq!(attrs.len(), 5);
        assert!(attrs.capacity() >= 5);
        assert_eq!(attrs.pop(), Some(a("c", "3")));
        assert_eq!(attrs.swap_remove(0), a("id", "2"));
        assert_eq!(attrs.drain(1..).count(), 2);
        assert_eq!(attrs.as_slice(), [a("b", "2")]);
        assert_eq!(
            format!("{:?}", Attrs::from([a("k", "v")])),
            r#"[("k", Str("v"))]"#
        );
    }
}
