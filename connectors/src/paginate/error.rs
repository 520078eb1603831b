//! Why a traversal stopped instead of looping or losing records.

use super::cursor::Position;

/// A paginator bug at the vendor, or a page that does not say where the next
/// one is. Every one of these ends the traversal: following on would loop
/// forever or yield a wrong record set.
///
/// Sources turn [`Malformed`](PaginationError::Malformed) into a malformed-body
/// HTTP error and the rest into a pagination one; a sync retries the traversal
/// from its start, where a vendor hiccup usually clears.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaginationError {
    /// A next page that was already fetched in this traversal.
    #[error(
        "the vendor sent {position} again as the next page after page {page}; following it would loop forever"
    )]
    RepeatedCursor {
        /// The repeated position.
        position: Position,
        /// How many pages had been read.
        page: u64,
    },
    /// An empty page that still names a next page.
    #[error(
        "the page at {position} is empty but names a next page ({next}); following it would loop forever"
    )]
    EmptyPageWithNext {
        /// The empty page.
        position: Position,
        /// What announced the next page.
        next: String,
    },
    /// The traversal ended with fewer items than the vendor's total: its paging stopped
    /// early.
    #[error(
        "the vendor reported a total of {expected} but its paging ended after {actual} records"
    )]
    TotalMismatch {
        /// The vendor's total on the last page.
        expected: u64,
        /// Records read over every page.
        actual: u64,
    },
    /// The total moved during an offset traversal: records were added or
    /// removed ahead of the offset, so some were skipped or read twice.
    #[error(
        "the vendor's total changed from {before} to {after} during an offset traversal, so records may have been skipped or repeated; restart the traversal"
    )]
    TotalChanged {
        /// The total reported before.
        before: u64,
        /// The total reported now.
        after: u64,
    },
    /// A next-page URL on another origin than the page that named it.
    #[error(
        "the next page {next} is on another origin than {page}; refusing to send credentials there"
    )]
    ForeignUrl {
        /// The next URL, scrubbed.
        next: String,
        /// The page that named it.
        page: String,
    },
    /// A cursor whose position this listing's paginator never produces (a
    /// checkpoint from before the source file changed, or another stream's).
    #[error(
        "{position} is not a position this listing's paginator produces; start the traversal again"
    )]
    ForeignCursor {
        /// The position given.
        position: Position,
    },
    /// Pages in a row that brought no id the traversal had not read already: the
    /// vendor keeps naming fresh cursors over the same records.
    #[error(
        "{pages} pages in a row, the last at {position}, brought no record that earlier pages had not (the vendor keeps naming new cursors over the same records); stopping instead of paging forever"
    )]
    NothingNew {
        /// How many pages in a row.
        pages: u32,
        /// Where the last of them was read.
        position: Position,
    },
    /// The listing still had pages after the most one run may read.
    #[error(
        "the listing still had more pages after max_pages ({max}) pages, the last at {position}; stopping (raise max_pages if the listing really is that long)"
    )]
    TooManyPages {
        /// The stream's `max_pages`.
        max: u64,
        /// Where the last page read was.
        position: Position,
    },
    /// The page does not have the shape the paginator reads (a token that is
    /// an object, a missing `has_more`).
    #[error("{0}")]
    Malformed(String),
    /// A page fed to a traversal that had already ended.
    #[error("the traversal has already read its last page")]
    Finished,
}

impl PaginationError {
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed(message.into())
    }
}
