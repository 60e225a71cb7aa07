//! The KV store's map key: short keys live inside the map's nodes, long ones on the heap.
//!
//! A `BTreeMap<Vec<u8>, _>` compares a searched key with keys that each sit in an allocation
//! of their own, so every comparison of a lookup or insert follows a pointer to memory the
//! cache rarely holds (with 100 000 keys, `memcmp` and `BTreeMap::insert` were 13 % of a
//! 3-node cluster's CPU at 256 clients: docs/BENCHMARKS.md, "Write path, round 2"). A [`Key`]
//! of at most [`INLINE_BYTES`] bytes is stored in the node itself, so a lookup reads only the
//! nodes on its path, and making one from a borrowed slice allocates nothing.
//!
//! Invariant: a key is `Inline` exactly when its length is at most `INLINE_BYTES`, and it
//! orders, compares and hashes as its bytes do, so `Borrow<[u8]>` is sound and map lookups
//! take plain slices.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;

/// Longest key kept inside the map's nodes (the key is 32 bytes either way).
pub(super) const INLINE_BYTES: usize = 30;

/// One key of the store.
#[derive(Clone)]
pub(super) enum Key {
    /// `bytes[..len]` is the key.
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    /// A key longer than `INLINE_BYTES`.
    Heap(Box<[u8]>),
}

impl Key {
    /// The key `bytes`, copied (allocating only when it is longer than `INLINE_BYTES`).
    pub(super) fn new(key: &[u8]) -> Key {
        if key.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..key.len()].copy_from_slice(key);
            Key::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(key.into())
        }
    }

    /// The key `bytes`, keeping the allocation of a long one.
    pub(super) fn from_vec(key: Vec<u8>) -> Key {
        if key.len() <= INLINE_BYTES {
            Key::new(&key)
        } else {
            Key::Heap(key.into_boxed_slice())
        }
    }

    /// The key's bytes.
    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..*len as usize],
            Key::Heap(bytes) => bytes,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_key_is_32_bytes_and_short_ones_are_inline() {
        assert_eq!(std::mem::size_of::<Key>(), 32);
        assert!(matches!(Key::new(&[7; INLINE_BYTES]), Key::Inline { .. }));
        assert!(matches!(Key::new(&[7; INLINE_BYTES + 1]), Key::Heap(_)));
        assert!(matches!(
            Key::from_vec(vec![7; INLINE_BYTES]),
            Key::Inline { .. }
        ));
        assert!(matches!(Key::from_vec(vec![7; 100]), Key::Heap(_)));
    }

    proptest! {
        /// Keys order and compare exactly as their bytes, across the inline/heap boundary
        /// (a key that is a prefix of another, zero bytes, lengths around `INLINE_BYTES`).
        #[test]
        fn keys_order_as_their_bytes(
            a in proptest::collection::vec(0u8..3, 0..40),
            b in proptest::collection::vec(0u8..3, 0..40),
        ) {
            let (ka, kb) = (Key::new(&a), Key::from_vec(b.clone()));
            prop_assert_eq!(ka.as_slice(), &a[..]);
            prop_assert_eq!(kb.as_slice(), &b[..]);
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(ka == kb, a == b);
        }
    }
}
