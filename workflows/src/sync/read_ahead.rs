//! Reading ahead: the request for a traversal's next page leaves while the page before
//! it is still being checkpointed, so a page's round trip and its checkpoint's commit
//! overlap instead of adding up.
//!
//! One page is read ahead, and only a page the traversal would move on to
//! ([`Traversal::next_after`](cairn_connectors::paginate::Traversal::next_after)): a
//! vendor is never asked for a page its pagination would refuse, nor past a listing's
//! last allowed page (`max_pages`) or past a page that would stop it for bringing nothing
//! new ([`SeenIds::may_read_beyond_next`](cairn_connectors::paginate::SeenIds::may_read_beyond_next)).
//! The request goes through the same source, so it waits for the same rate budget as any
//! other. Only the fetch step of that very cursor takes its answer, and checkpoints it as
//! if it had asked itself; a page is therefore fetched again after a crash only if it was
//! in flight then (the page being checkpointed, and the one read ahead of it).

use std::sync::{Arc, Mutex, PoisonError};

use cairn_connectors::error::HttpError;
use cairn_connectors::paginate::PageCursor;
use cairn_connectors::source::{Page, Source};
use tracing::Instrument;

use super::landing::Detached;

/// A page's request in flight ahead of its fetch step.
type Pending = Detached<Result<Page, HttpError>>;

/// The page read ahead of a traversal, if any: at most one, dropped (and its request
/// aborted) with the run's execution.
#[derive(Default)]
pub(crate) struct ReadAhead {
    slot: Mutex<Option<(PageCursor, Pending)>>,
}

impl ReadAhead {
    /// Sends the request for the page at `cursor` of `stream` now, in `span` (the
    /// traversal's, not the step's that is still checkpointing the page before).
    pub(super) fn start(
        &self,
        source: &Arc<dyn Source>,
        stream: &str,
        cursor: &PageCursor,
        span: tracing::Span,
    ) {
        let (source, stream, at) = (Arc::clone(source), stream.to_owned(), cursor.clone());
        let pending = Detached::spawn(
            "page read ahead",
            async move { Ok(source.fetch_page(&stream, &at).await) }.instrument(span),
        );
        *self.lock() = Some((cursor.clone(), pending));
    }

    /// The request read ahead for `cursor`, if that is the page read ahead; any other
    /// is dropped, which aborts it.
    pub(super) fn take(&self, cursor: &PageCursor) -> Option<Pending> {
        let (at, pending) = self.lock().take()?;
        (at == *cursor).then_some(pending)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(PageCursor, Pending)>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
