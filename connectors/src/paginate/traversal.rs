//! Loop protection over a whole traversal.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cursor::{PageCursor, Position};
use super::error::PaginationError;

/// What a traversal needs to know about a fetched page.
pub trait Paged {
    /// Items on the page as the vendor served them, before any client-side
    /// filtering: what the vendor's total counts.
    fn fetched(&self) -> usize;
    /// The next page, or `None` on the last one.
    fn next(&self) -> Option<&PageCursor>;
    /// The vendor's total for the whole listing, when it reports one.
    fn total(&self) -> Option<u64>;
}

/// The checks that need only one page: an empty page that names a next page,
/// and a next page that is this one.
pub fn check_page(
    current: &Position,
    fetched: usize,
    next: Option<&Position>,
) -> Result<(), PaginationError> {
    let Some(next) = next else {
        return Ok(());
    };
    if fetched == 0 {
        return Err(PaginationError::EmptyPageWithNext {
            position: current.clone(),
            next: next.to_string(),
        });
    }
    if next == current {
        return Err(PaginationError::RepeatedCursor {
            position: next.clone(),
            page: 1,
        });
    }
    Ok(())
}

/// One traversal of a listing, fed every page in order, that fails rather
/// than loops or miscounts.
///
/// It refuses a next position it has already visited, an empty page that
/// names a next page, a vendor total that moves during offset paging (records
/// were skipped or read twice), and a final count short of the vendor's total on
/// the last page (more is allowed: a listing may repeat items, which a caller tells
/// apart by their ids). It is `Serialize`, so a workflow can checkpoint it
/// next to the cursor; visited positions are kept as 64-bit fingerprints.
///
/// ```no_run
/// # async fn demo(source: &dyn cairn_connectors::source::Source) -> Result<(), Box<dyn std::error::Error>> {
/// use cairn_connectors::paginate::{PageCursor, Traversal};
///
/// let mut traversal = Traversal::new(PageCursor::start());
/// while let Some(cursor) = traversal.cursor().cloned() {
///     let page = source.fetch_page("contacts", &cursor).await?;
///     traversal.advance(&page)?;
///     println!("{} records", page.records.len());
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traversal {
    cursor: Option<PageCursor>,
    pages: u64,
    fetched: u64,
    total: Option<u64>,
    visited: BTreeSet<u64>,
}

impl Traversal {
    /// A traversal that begins at `start` (usually [`PageCursor::start`] or
    /// [`PageCursor::since`], or a checkpointed cursor to resume from).
    pub fn new(start: PageCursor) -> Self {
        let visited = BTreeSet::from([fingerprint(&start.position)]);
        Self {
            cursor: Some(start),
            pages: 0,
            fetched: 0,
            total: None,
            visited,
        }
    }

    /// A traversal that carries on at `start` after `pages` pages and `fetched` items
    /// read by an earlier one (a backfill resumed by another run): counts and checks
    /// against the vendor's total cover the whole listing.
    pub fn resume(start: PageCursor, pages: u64, fetched: u64) -> Self {
        Self {
            pages,
            fetched,
            ..Self::new(start)
        }
    }

    /// The page to fetch next; `None` once the last page has been read.
    pub fn cursor(&self) -> Option<&PageCursor> {
        self.cursor.as_ref()
    }

    /// The cursor [`advance`](Self::advance) would move to after `page`, when it
    /// would take the page in and move on to a position not visited yet: what a reader
    /// may request ahead while it is still storing `page`, without ever asking a vendor
    /// for a page its pagination would refuse.
    pub fn next_after<'p>(&self, page: &'p impl Paged) -> Option<&'p PageCursor> {
        let current = self.cursor.as_ref()?;
        let next = page.next()?;
        check_page(&current.position, page.fetched(), Some(&next.position)).ok()?;
        if self.total_moved(current, page).is_some()
            || self.visited.contains(&fingerprint(&next.position))
        {
            return None;
        }
        Some(next)
    }

    /// The vendor's total before and on `page`, when it moved during offset paging.
    fn total_moved(&self, current: &PageCursor, page: &impl Paged) -> Option<(u64, u64)> {
        let after = page.total()?;
        let before = self.total?;
        let offsets = matches!(current.position, Position::Offset(_))
            || matches!(page.next().map(|c| &c.position), Some(Position::Offset(_)));
        (before != after && offsets).then_some((before, after))
    }

    /// Takes in the page fetched at [`cursor`](Self::cursor) and moves to the
    /// next one, or fails if the vendor's pagination cannot be trusted.
    pub fn advance(&mut self, page: &impl Paged) -> Result<(), PaginationError> {
        let current = self.cursor.as_ref().ok_or(PaginationError::Finished)?;
        let next = page.next();
        check_page(&current.position, page.fetched(), next.map(|c| &c.position)).map_err(
            |error| match error {
                PaginationError::RepeatedCursor { position, .. } => {
                    PaginationError::RepeatedCursor {
                        position,
                        page: self.pages + 1,
                    }
                }
                other => other,
            },
        )?;
        if let Some((before, after)) = self.total_moved(current, page) {
            return Err(PaginationError::TotalChanged { before, after });
        }
        if let Some(after) = page.total() {
            self.total = Some(after);
        }
        self.pages += 1;
        self.fetched += page.fetched() as u64;
        match next {
            Some(next) => {
                if !self.visited.insert(fingerprint(&next.position)) {
                    return Err(PaginationError::RepeatedCursor {
                        position: next.position.clone(),
                        page: self.pages,
                    });
                }
                self.cursor = Some(next.clone());
            }
            None => {
                self.cursor = None;
                if let Some(expected) = self.total
                    && self.fetched < expected
                {
                    return Err(PaginationError::TotalMismatch {
                        expected,
                        actual: self.fetched,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the last page has been read.
    pub fn is_done(&self) -> bool {
        self.cursor.is_none()
    }

    /// Pages read so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Items read so far, as the vendor served them (before client-side
    /// filtering).
    pub fn fetched(&self) -> u64 {
        self.fetched
    }

    /// The vendor's total on the latest page that reported one.
    pub fn total(&self) -> Option<u64> {
        self.total
    }
}

/// A position's identity, stable across processes and releases (unlike
/// `std`'s hashers), so a checkpointed traversal still recognises positions
/// after a restart.
fn fingerprint(position: &Position) -> u64 {
    let mut hasher = Sha256::new();
    match position {
        Position::Start => hasher.update(b"start"),
        Position::Token(token) => {
            hasher.update(b"token:");
            hasher.update(token.as_bytes());
        }
        Position::Offset(offset) => {
            hasher.update(b"offset:");
            hasher.update(offset.to_be_bytes());
        }
        Position::Url(url) => {
            hasher.update(b"url:");
            hasher.update(url.as_bytes());
        }
    }
    let digest = hasher.finalize();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::{Paged, Traversal};
    use crate::paginate::{PageCursor, PaginationError, Position};

    struct Fake {
        fetched: usize,
        next: Option<PageCursor>,
        total: Option<u64>,
    }

    impl Paged for Fake {
        fn fetched(&self) -> usize {
            self.fetched
        }
        fn next(&self) -> Option<&PageCursor> {
            self.next.as_ref()
        }
        fn total(&self) -> Option<u64> {
            self.total
        }
    }

    fn page(fetched: usize, next: Option<Position>, total: Option<u64>) -> Fake {
        Fake {
            fetched,
            next: next.map(|position| PageCursor::start().at(position)),
            total,
        }
    }

    fn token(text: &str) -> Option<Position> {
        Some(Position::Token(text.to_owned()))
    }

    #[test]
    fn a_clean_traversal_counts_and_ends() {
        let mut traversal = Traversal::new(PageCursor::start());
        traversal
            .advance(&page(2, token("a"), Some(5)))
            .expect("page 1");
        traversal
            .advance(&page(2, token("b"), Some(5)))
            .expect("page 2");
        traversal.advance(&page(1, None, Some(5))).expect("page 3");
        assert!(traversal.is_done());
        assert_eq!((traversal.pages(), traversal.fetched()), (3, 5));
        assert_eq!(
            traversal.advance(&page(1, None, None)),
            Err(PaginationError::Finished)
        );
    }

    #[test]
    fn a_cursor_seen_before_is_refused() {
        let mut traversal = Traversal::new(PageCursor::start());
        traversal
            .advance(&page(2, token("a"), None))
            .expect("page 1");
        traversal
            .advance(&page(2, token("b"), None))
            .expect("page 2");
        let error = traversal.advance(&page(2, token("a"), None));
        assert!(
            matches!(error, Err(PaginationError::RepeatedCursor { page: 3, .. })),
            "{error:?}"
        );
        let mut same = Traversal::new(PageCursor::start());
        same.advance(&page(2, token("a"), None)).expect("page 1");
        assert!(matches!(
            same.advance(&page(2, token("a"), None)),
            Err(PaginationError::RepeatedCursor { page: 2, .. })
        ));
    }

    #[test]
    fn an_empty_page_with_a_next_is_refused() {
        let mut traversal = Traversal::new(PageCursor::start());
        assert!(matches!(
            traversal.advance(&page(0, token("a"), None)),
            Err(PaginationError::EmptyPageWithNext { .. })
        ));
    }

    #[test]
    fn totals_are_checked_at_the_end_and_held_still_for_offsets() {
        let mut short = Traversal::new(PageCursor::start());
        short
            .advance(&page(2, token("a"), Some(5)))
            .expect("page 1");
        assert_eq!(
            short.advance(&page(2, None, Some(5))),
            Err(PaginationError::TotalMismatch {
                expected: 5,
                actual: 4
            })
        );
        let mut shifted = Traversal::new(PageCursor::start());
        shifted
            .advance(&page(2, Some(Position::Offset(2)), Some(5)))
            .expect("page 1");
        assert_eq!(
            shifted.advance(&page(2, Some(Position::Offset(4)), Some(4))),
            Err(PaginationError::TotalChanged {
                before: 5,
                after: 4
            })
        );
    }

    #[test]
    fn a_checkpointed_traversal_still_knows_where_it_has_been() {
        let mut traversal = Traversal::new(PageCursor::start());
        traversal
            .advance(&page(2, token("a"), None))
            .expect("page 1");
        let stored = serde_json::to_string(&traversal).expect("serializes");
        let mut resumed: Traversal = serde_json::from_str(&stored).expect("parses");
        resumed.advance(&page(2, token("b"), None)).expect("page 2");
        assert!(matches!(
            resumed.advance(&page(2, token("a"), None)),
            Err(PaginationError::RepeatedCursor { .. })
        ));
    }
    #[test]
    fn only_a_page_it_would_move_on_to_is_named_ahead() {
        let mut traversal = Traversal::new(PageCursor::start());
        let first = page(2, token("a"), Some(6));
        assert_eq!(
            traversal.next_after(&first).map(|c| &c.position),
            token("a").as_ref()
        );
        traversal.advance(&first).expect("page 1");
        // The one before, this one, an empty page naming another, and the last page.
        assert_eq!(traversal.next_after(&page(2, token("a"), None)), None);
        assert_eq!(
            traversal.next_after(&page(2, Some(Position::Start), None)),
            None,
            "the start was visited"
        );
        assert_eq!(traversal.next_after(&page(0, token("b"), None)), None);
        assert_eq!(traversal.next_after(&page(2, None, None)), None);
        assert!(
            traversal
                .next_after(&page(2, token("b"), Some(6)))
                .is_some()
        );

        let mut offsets = Traversal::new(PageCursor::start());
        offsets
            .advance(&page(2, Some(Position::Offset(2)), Some(5)))
            .expect("page 1");
        assert_eq!(
            offsets.next_after(&page(2, Some(Position::Offset(4)), Some(4))),
            None,
            "a total that moved under offsets"
        );
        assert!(
            offsets
                .next_after(&page(2, Some(Position::Offset(4)), Some(5)))
                .is_some()
        );
    }
}
