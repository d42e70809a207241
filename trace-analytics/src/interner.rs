//! A bounded string interner: names (event types, sources, categories) become small ids.
//!
//! The first `capacity` distinct names get their own id; every later name shares the id
//! [`Interner::OTHER`], reported as `(other)`. This keeps per-name tables as plain vectors and
//! the hot path free of allocations once a name is known.

use serde::{Deserialize, Serialize};

use crate::hashing::FastMap;

/// Maps names to dense `u32` ids, at most `capacity` names plus the shared `(other)` id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "InternerRepr", into = "InternerRepr")]
pub struct Interner {
    capacity: usize,
    names: Vec<Box<str>>,
    ids: FastMap<Box<str>, u32>,
}

#[derive(Serialize, Deserialize)]
struct InternerRepr {
    capacity: usize,
    names: Vec<Box<str>>,
}

impl From<InternerRepr> for Interner {
    fn from(repr: InternerRepr) -> Self {
        let ids = repr
            .names
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        Interner {
            capacity: repr.capacity,
            names: repr.names,
            ids,
        }
    }
}

impl From<Interner> for InternerRepr {
    fn from(interner: Interner) -> Self {
        InternerRepr {
            capacity: interner.capacity,
            names: interner.names,
        }
    }
}

impl Interner {
    /// The id shared by every name past the capacity.
    pub const OTHER: u32 = 0;
    /// The name reported for [`Interner::OTHER`].
    pub const OTHER_NAME: &'static str = "(other)";

    /// An interner that gives at most `capacity` names their own id.
    pub fn new(capacity: usize) -> Self {
        Interner {
            capacity,
            names: vec![Box::from(Self::OTHER_NAME)],
            ids: FastMap::default(),
        }
    }

    /// The id of `name`, adding it while there is room.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        if self.names.len() > self.capacity {
            return Self::OTHER;
        }
        let id = self.names.len() as u32;
        let boxed: Box<str> = Box::from(name);
        self.names.push(boxed.clone());
        self.ids.insert(boxed, id);
        id
    }

    /// The id of `name` if it is known.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of `id` (`(other)` for [`Interner::OTHER`] and unknown ids).
    pub fn name(&self, id: u32) -> &str {
        self.names
            .get(id as usize)
            .map(|n| &**n)
            .unwrap_or(Self::OTHER_NAME)
    }

    /// How many ids are in use, `(other)` included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no name has been interned yet.
    pub fn is_empty(&self) -> bool {
        self.names.len() == 1
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        let strings: usize = self.names.iter().map(|n| n.len()).sum();
        2 * strings + self.names.capacity() * 16 + self.ids.capacity() * 24
    }
}
