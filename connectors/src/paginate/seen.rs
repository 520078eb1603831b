//! The ids a traversal has read, to stop one that pages without end: a vendor that
//! hands out a fresh cursor for every page while serving the same records gets past
//! every cursor check, but not past "nothing new, several pages in a row".

use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use super::cursor::Position;
use super::error::PaginationError;

/// Pages in a row that bring no new id after which a traversal is stopped: a listing
/// whose pages overlap repeats a few records, never whole pages three times over.
pub const STALE_PAGES: u32 = 3;

/// The ids read so far (as 64-bit hashes: a million ids take 16 MB, and a collision
/// would need about four billion of them), how many came again, and the bounds on a
/// traversal's length.
#[derive(Debug, Default)]
pub struct SeenIds {
    ids: HashSet<u64>,
    repeated: u64,
    /// Pages in a row whose ids were all read before (pages without ids, such as ones a
    /// client-side filter emptied, neither count nor break the streak).
    stale_streak: u32,
    pages: u64,
}

impl SeenIds {
    /// Takes in the ids of the next page.
    pub fn add(&mut self, ids: impl IntoIterator<Item = impl AsRef<str>>) {
        self.pages += 1;
        let (mut new, mut any) = (false, false);
        for id in ids {
            any = true;
            let mut hasher = std::hash::DefaultHasher::new();
            id.as_ref().hash(&mut hasher);
            if self.ids.insert(hasher.finish()) {
                new = true;
            } else {
                self.repeated += 1;
            }
        }
        if new {
            self.stale_streak = 0;
        } else if any {
            self.stale_streak += 1;
        }
    }

    /// Whether a page read after those so far may still be followed by another one: not
    /// the `max_pages`-th, and not one that, bringing nothing new, would make the
    /// [`STALE_PAGES`]-th stale page in a row. A reader may request the page after it
    /// ahead of time only then; the traversal is stopped after it otherwise.
    pub fn may_read_beyond_next(&self, max_pages: Option<u64>) -> bool {
        self.stale_streak + 1 < STALE_PAGES && max_pages.is_none_or(|max| self.pages + 1 < max)
    }

    /// Distinct ids read.
    pub fn distinct(&self) -> u64 {
        self.ids.len() as u64
    }

    /// Ids read more than once.
    pub fn repeated(&self) -> u64 {
        self.repeated
    }

    /// Whether the traversal may go on after the page read at `position` named a next
    /// one: not after [`STALE_PAGES`] pages in a row brought nothing new, nor after
    /// `max_pages` pages.
    pub fn may_continue(
        &self,
        position: &Position,
        max_pages: Option<u64>,
    ) -> Result<(), PaginationError> {
        if self.stale_streak >= STALE_PAGES {
            return Err(PaginationError::NothingNew {
                pages: self.stale_streak,
                position: position.clone(),
            });
        }
        if let Some(max) = max_pages.filter(|max| self.pages >= *max) {
            return Err(PaginationError::TooManyPages {
                max,
                position: position.clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_read_beyond_only_while_the_traversal_may_go_on_after_it() {
        let mut seen = SeenIds::default();
        assert!(seen.may_read_beyond_next(Some(3)));
        seen.add(["1"]);
        assert!(seen.may_read_beyond_next(Some(3)));
        seen.add(["2"]);
        // The third page is the last `max_pages` allows: nothing is read beyond it.
        assert!(!seen.may_read_beyond_next(Some(3)));
        assert!(seen.may_read_beyond_next(None));
        seen.add(["2"]);
        assert!(seen.may_read_beyond_next(None), "one stale page");
        seen.add(["1", "2"]);
        assert!(
            !seen.may_read_beyond_next(None),
            "a third stale page would stop the traversal"
        );
        seen.add(["3"]);
        assert!(
            seen.may_read_beyond_next(None),
            "something new resets the streak"
        );
    }

    #[test]
    fn three_pages_with_nothing_new_stop_the_traversal() {
        let mut seen = SeenIds::default();
        let at = Position::Token("t".into());
        seen.add(["1", "2"]);
        seen.add(["2", "3"]);
        assert!(
            seen.may_continue(&at, None).is_ok(),
            "an overlap is not a loop"
        );
        seen.add(Vec::<&str>::new());
        for _ in 0..2 {
            seen.add(["1", "3"]);
            assert!(seen.may_continue(&at, None).is_ok());
        }
        seen.add(["2"]);
        let err = seen.may_continue(&at, None).unwrap_err();
        assert!(
            err.to_string().contains("3 pages in a row, the last at"),
            "{err}"
        );
        assert_eq!((seen.distinct(), seen.repeated()), (3, 6));
        assert!(matches!(
            seen.may_continue(&at, Some(7)),
            Err(PaginationError::NothingNew { .. })
        ));
        let mut short = SeenIds::default();
        short.add(["1"]);
        short.add(["2"]);
        assert!(matches!(
            short.may_continue(&at, Some(2)),
            Err(PaginationError::TooManyPages { max: 2, .. })
        ));
    }
}
