//! The in-memory index both built-in backends serve reads from: records by id, by name and by
//! tag, and the checks every write passes before it is applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use crate::{Cursor, Error, KeyId, KeyName, KeyRecord, ListQuery, Page, Result};

/// The three kinds of write a store accepts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WriteKind {
    Create,
    Update,
    Purge,
    Import,
}

/// Records by id, with secondary indexes by name and by tag.
#[derive(Debug, Default)]
pub(crate) struct Index {
    by_id: BTreeMap<KeyId, Arc<KeyRecord>>,
    by_name: HashMap<KeyName, KeyId>,
    by_tag: HashMap<(String, String), BTreeSet<KeyId>>,
}

impl Index {
    pub(crate) fn get(&self, id: &KeyId) -> Option<Arc<KeyRecord>> {
        self.by_id.get(id).cloned()
    }

    pub(crate) fn find_by_name(&self, name: &KeyName) -> Option<Arc<KeyRecord>> {
        self.by_name.get(name).and_then(|id| self.get(id))
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Checks a write of `kind` against the stored record, before it is applied.
    pub(crate) fn check(&self, kind: WriteKind, record: &KeyRecord) -> Result<()> {
        match kind {
            WriteKind::Create => self.check_create(record),
            WriteKind::Update => self.check_update(record),
            WriteKind::Purge => self.check_purge(record),
            WriteKind::Import => {
                self.check_unique(record)?;
                record.check_invariants()
            }
        }
    }

    /// Checks that `record` may be created.
    fn check_create(&self, record: &KeyRecord) -> Result<()> {
        self.check_unique(record)?;
        record.check_new()
    }

    /// Checks that neither the id nor the name of `record` is taken.
    fn check_unique(&self, record: &KeyRecord) -> Result<()> {
        if self.by_id.contains_key(&record.id) {
            return Err(Error::AlreadyExists(record.id));
        }
        if let Some(name) = &record.name
            && self.by_name.contains_key(name)
        {
            return Err(Error::NameTaken(name.clone()));
        }
        Ok(())
    }

    fn check_update(&self, record: &KeyRecord) -> Result<()> {
        self.by_id.get(&record.id).ok_or(Error::NotFound(record.id))?.check_update(record)
    }

    fn check_purge(&self, record: &KeyRecord) -> Result<()> {
        self.by_id.get(&record.id).ok_or(Error::NotFound(record.id))?.check_purge(record)
    }

    /// Inserts or replaces a record (already checked), keeping the secondary indexes in step.
    pub(crate) fn apply(&mut self, record: Arc<KeyRecord>) {
        if let Some(old) = self.by_id.get(&record.id).cloned() {
            for tag in &old.tags {
                if record.tags.get(tag.0) != Some(tag.1)
                    && let Some(ids) = self.by_tag.get_mut(&(tag.0.clone(), tag.1.clone()))
                {
                    ids.remove(&record.id);
                    if ids.is_empty() {
                        self.by_tag.remove(&(tag.0.clone(), tag.1.clone()));
                    }
                }
            }
        }
        for (k, v) in &record.tags {
            self.by_tag.entry((k.clone(), v.clone())).or_default().insert(record.id);
        }
        if let Some(name) = &record.name {
            self.by_name.insert(name.clone(), record.id);
        }
        self.by_id.insert(record.id, record);
    }

    /// One page of keys matching `query`, in id order.
    pub(crate) fn list(&self, query: &ListQuery) -> Result<Page> {
        query.validate()?;
        let start = match query.cursor {
            Some(Cursor(id)) => Bound::Excluded(id),
            None => Bound::Included(KeyId::MIN),
        };
        let range = (start, Bound::Unbounded);
        // With tag filters, walk the smallest posting list instead of every key.
        let candidates: Box<dyn Iterator<Item = &Arc<KeyRecord>>> = if query.tags.is_empty() {
            Box::new(self.by_id.range(range).map(|(_, r)| r))
        } else {
            let smallest = query
                .tags
                .iter()
                .map(|(k, v)| self.by_tag.get(&(k.clone(), v.clone())))
                .min_by_key(|ids| ids.map_or(0, BTreeSet::len));
            match smallest.flatten() {
                Some(ids) => Box::new(ids.range(range).filter_map(|id| self.by_id.get(id))),
                None => Box::new(std::iter::empty()),
            }
        };
        let mut keys: Vec<Arc<KeyRecord>> =
            candidates.filter(|r| query.matches(r)).take(query.limit + 1).cloned().collect();
        let next_cursor = if keys.len() > query.limit {
            keys.truncate(query.limit);
            keys.last().map(|r| Cursor(r.id))
        } else {
            None
        };
        Ok(Page { keys, next_cursor })
    }
}
