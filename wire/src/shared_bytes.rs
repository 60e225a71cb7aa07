//! [`SharedBytes`]: a cheap clonable view of a range of a shared, immutable buffer.
//!
//! An entry's command bytes are such a view into the entry's record (`crate::record`): the
//! leader's record holds the command once, a follower's entries all point into the one buffer
//! an AppendRequest's records were received in, and the state machine reads the command
//! where it lies. Cloning a view counts a reference; the buffer is freed with its last view.
//! Invariant: `start <= end <= buf.len()`; the bytes never change once shared.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

/// Immutable bytes, shared: a range of a reference-counted buffer. Dereferences to `&[u8]`;
/// compares, hashes and prints as those bytes. A view keeps its whole buffer alive (a
/// follower's command keeps the batch it arrived in): copy it (`to_vec`) to keep it long.
#[derive(Clone)]
pub struct SharedBytes {
    buf: Arc<[u8]>,
    start: usize,
    end: usize,
}

impl SharedBytes {
    /// A view of all of `buf`.
    pub fn from_shared(buf: Arc<[u8]>) -> SharedBytes {
        let end = buf.len();
        SharedBytes { buf, start: 0, end }
    }

    /// A new buffer holding a copy of `bytes`.
    pub fn copy_from_slice(bytes: &[u8]) -> SharedBytes {
        SharedBytes::from_shared(Arc::from(bytes))
    }

    /// The bytes viewed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// A view of `range` of these bytes (relative to this view), sharing the buffer.
    ///
    /// # Panics
    /// If `range` does not lie within this view.
    pub fn slice(&self, range: Range<usize>) -> SharedBytes {
        assert!(
            range.start <= range.end && range.end <= self.len(),
            "range {range:?} outside a view of {} bytes",
            self.len()
        );
        SharedBytes {
            buf: Arc::clone(&self.buf),
            start: self.start + range.start,
            end: self.start + range.end,
        }
    }

    /// True when both views point into the same buffer (no copy was made between them).
    pub fn shares_buffer_with(&self, other: &SharedBytes) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }
}

impl Default for SharedBytes {
    fn default() -> SharedBytes {
        SharedBytes::copy_from_slice(&[])
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for SharedBytes {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

/// Copies the bytes once into a new shared buffer.
impl From<Vec<u8>> for SharedBytes {
    fn from(bytes: Vec<u8>) -> SharedBytes {
        SharedBytes::from_shared(Arc::from(bytes))
    }
}

impl From<&[u8]> for SharedBytes {
    fn from(bytes: &[u8]) -> SharedBytes {
        SharedBytes::copy_from_slice(bytes)
    }
}

impl<const N: usize> From<&[u8; N]> for SharedBytes {
    fn from(bytes: &[u8; N]) -> SharedBytes {
        SharedBytes::copy_from_slice(bytes)
    }
}

impl PartialEq for SharedBytes {
    fn eq(&self, other: &SharedBytes) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SharedBytes {}

impl PartialEq<[u8]> for SharedBytes {
    fn eq(&self, other: &[u8]) -> bool {
        self.as_slice() == other
    }
}

impl PartialEq<&[u8]> for SharedBytes {
    fn eq(&self, other: &&[u8]) -> bool {
        self.as_slice() == *other
    }
}

impl PartialEq<Vec<u8>> for SharedBytes {
    fn eq(&self, other: &Vec<u8>) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<const N: usize> PartialEq<[u8; N]> for SharedBytes {
    fn eq(&self, other: &[u8; N]) -> bool {
        self.as_slice() == other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for SharedBytes {
    fn eq(&self, other: &&[u8; N]) -> bool {
        self.as_slice() == *other
    }
}

impl Hash for SharedBytes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

/// Prints the bytes as a `Vec<u8>` or a slice would.
impl fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slice_shares_the_buffer_and_sees_its_range() {
        let all = SharedBytes::from(vec![0u8, 1, 2, 3, 4, 5]);
        let middle = all.slice(1..5);
        assert_eq!(middle, [1u8, 2, 3, 4]);
        let inner = middle.slice(1..3);
        assert_eq!(&inner[..], &[2u8, 3]);
        assert!(inner.shares_buffer_with(&all));
        assert!(!inner.shares_buffer_with(&SharedBytes::from(&[2u8, 3])));
        assert_eq!(inner, SharedBytes::from(&[2u8, 3]));
        assert_eq!(middle.slice(4..4), SharedBytes::default());
    }

    #[test]
    #[should_panic(expected = "outside a view of 4 bytes")]
    fn a_slice_past_the_view_panics() {
        let view = SharedBytes::from(vec![0u8; 8]).slice(2..6);
        let _ = view.slice(2..5);
    }

    #[test]
    fn prints_and_hashes_as_its_bytes() {
        let view = SharedBytes::from(vec![9u8, 1, 2]).slice(1..3);
        assert_eq!(format!("{view:?}"), format!("{:?}", vec![1u8, 2]));
        let mut set = std::collections::HashSet::new();
        set.insert(view);
        assert!(set.contains(&[1u8, 2][..]));
    }
}
