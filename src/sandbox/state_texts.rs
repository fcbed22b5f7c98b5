//! The containers' texts in the state file, in the order the containers
//! came ([`super::Container::seq`]): a new container's text goes at the end,
//! so the write after a create rewrites that text alone, whatever its id.
//! An index by id finds a text to drop without a pass over the others
//! (each a 64-byte compare with Kata's ids, at every create and removal).

use std::collections::HashMap;

use super::durable::StateText;

/// The texts, ordered by their containers' `seq`, and each one's `seq` by id.
#[derive(Default)]
pub(crate) struct Texts {
    list: Vec<(String, StateText)>,
    seq_of: HashMap<String, u64>,
}

impl Texts {
    /// Where the text of the container numbered `seq` is (or would go).
    fn place(&self, seq: u64) -> Result<usize, usize> {
        self.list.binary_search_by_key(&seq, |(_, t)| t.seq())
    }

    /// The text of the container numbered `seq`, if there is one.
    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut StateText> {
        let at = self.place(seq).ok()?;
        Some(&mut self.list[at].1)
    }

    /// Puts `text` in its place, in place of any other text under `id` (a
    /// container removed and another created under its id between two writes).
    pub(crate) fn put(&mut self, id: &str, text: StateText) {
        self.remove(id);
        self.seq_of.insert(id.to_string(), text.seq());
        match self.place(text.seq()) {
            Ok(at) => self.list[at].1 = text,
            Err(at) => self.list.insert(at, (id.to_string(), text)),
        }
    }

    /// Drops the text under `id`, if any.
    pub(crate) fn remove(&mut self, id: &str) {
        if let Some(seq) = self.seq_of.remove(id) {
            if let Ok(at) = self.place(seq) {
                self.list.remove(at);
            }
        }
    }

    /// Keeps only the texts whose id `keep` accepts.
    pub(crate) fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.list.retain(|(id, _)| keep(id));
        self.seq_of.retain(|id, _| keep(id));
    }

    /// Each id with its text, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &StateText)> {
        self.list.iter().map(|(id, t)| (id, t))
    }
}
