//! The bytes of responses one connection may have queued.
//!
//! The reader reserves a response's size (or, for a response still being computed, its upper
//! bound) before it queues the response, and the writer releases the reservation once the bytes
//! are written. While the budget is spent the reader waits, so it stops reading requests: a
//! client that sends requests but never reads the answers holds at most the budget in memory.
//!
//! Reservations are taken in request order, and responses are written in that same order, so
//! the oldest unwritten response always holds its reservation and the connection cannot stall
//! on its own budget. A reservation larger than the whole budget is cut down to the budget.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A per-connection budget of queued response bytes.
pub(crate) struct ResponseBudget {
    permits: Arc<Semaphore>,
    bytes_max: usize,
}

/// Bytes held from a [`ResponseBudget`] until dropped.
pub(crate) struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl ResponseBudget {
    /// A budget of `bytes_max` bytes (one permit per byte).
    pub(crate) fn new(bytes_max: usize) -> ResponseBudget {
        assert!(bytes_max <= u32::MAX as usize, "permits are taken as u32");
        ResponseBudget {
            permits: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Waits until `bytes` (at most the whole budget) are free, and holds them.
    pub(crate) async fn reserve(&self, bytes: usize) -> Reservation {
        let permits = bytes.min(self.bytes_max) as u32;
        if permits == 0 {
            return Reservation { _permit: None };
        }
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(permits)
            .await
            .expect("the budget's semaphore is never closed");
        Reservation {
            _permit: Some(permit),
        }
    }

    /// Bytes not reserved now.
    #[cfg(test)]
    pub(crate) fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn a_spent_budget_waits_until_a_reservation_is_released() {
        let budget = ResponseBudget::new(100);
        let first = budget.reserve(60).await;
        assert_eq!(budget.available(), 40);
        let mut second = Box::pin(budget.reserve(60));
        assert!(
            (&mut second).now_or_never().is_none(),
            "60 bytes more than the 40 free must wait"
        );
        drop(first);
        let second = second
            .now_or_never()
            .expect("free once the first is written");
        assert_eq!(budget.available(), 40);
        drop(second);
        assert_eq!(budget.available(), 100);
    }

    #[tokio::test]
    async fn a_reservation_above_the_budget_takes_the_whole_budget() {
        let budget = ResponseBudget::new(100);
        let huge = budget.reserve(usize::MAX).await;
        assert_eq!(budget.available(), 0);
        assert!(budget.reserve(1).now_or_never().is_none());
        drop(huge);
        let empty = budget.reserve(0).now_or_never();
        assert!(empty.is_some(), "an empty response needs no budget");
    }
}
