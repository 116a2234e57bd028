//! The bound on idle instances — kept for `reuse` or waiting shared ones — which hold
//! pooling-allocator slots: [`MAX_IDLE`] per function and [`MAX_IDLE_TOTAL`] in the process
//! (the engine reserves that many slots more).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Idle instances kept per function.
pub const MAX_IDLE: usize = 16;
/// Idle instances kept in the whole process; the engine reserves as many pool slots.
pub const MAX_IDLE_TOTAL: usize = 64;

/// Idle instances in the whole process.
static IDLE_TOTAL: AtomicUsize = AtomicUsize::new(0);

/// A place among the process's idle instances ([`MAX_IDLE_TOTAL`]) and its function's
/// ([`MAX_IDLE`], counted in `count`), held while an instance waits for work.
pub(super) struct IdlePlace {
    count: Arc<AtomicUsize>,
}

impl IdlePlace {
    /// A place, when both bounds leave room.
    pub(super) fn take(count: &Arc<AtomicUsize>) -> Option<IdlePlace> {
        let below = |max: usize| move |n: usize| (n < max).then_some(n + 1);
        (count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, below(MAX_IDLE))).ok()?;
        if (IDLE_TOTAL.fetch_update(Ordering::Relaxed, Ordering::Relaxed, below(MAX_IDLE_TOTAL)))
            .is_err()
        {
            count.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(IdlePlace {
            count: count.clone(),
        })
    }
}

impl Drop for IdlePlace {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
        IDLE_TOTAL.fetch_sub(1, Ordering::Relaxed);
    }
}
