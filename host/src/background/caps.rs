//! Per-function caps on one node (`concurrency`): a semaphore per capped function, with the
//! limit it was made for; made at the function's first claim (a deploy brings functions after
//! startup) and made afresh when the settings in force name another limit (attempts holding
//! the old one's permits finish under it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

/// The caps of the functions claimed so far.
#[derive(Default)]
pub(super) struct Caps(Mutex<HashMap<String, (usize, Arc<Semaphore>)>>);

impl Caps {
    /// The functions at their cap now: not to be claimed.
    pub(super) fn full(&self) -> Vec<String> {
        let caps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        caps.iter()
            .filter(|(_, (_, s))| s.available_permits() == 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// The cap of `function` for `limit` (its `concurrency` in force; `None`: uncapped).
    pub(super) fn of(&self, function: &str, limit: Option<usize>) -> Option<Arc<Semaphore>> {
        let mut caps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(limit) = limit else {
            caps.remove(function);
            return None;
        };
        match caps.get(function) {
            Some((made_for, cap)) if *made_for == limit => Some(cap.clone()),
            _ => {
                let cap = Arc::new(Semaphore::new(limit));
                caps.insert(function.to_string(), (limit, cap.clone()));
                Some(cap)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cap_is_kept_for_its_limit_and_made_afresh_for_another() {
        let caps = Caps::default();
        let one = caps.of("f", Some(1)).unwrap();
        let _held = one.clone().try_acquire_owned().unwrap();
        assert_eq!(caps.full(), ["f"]);
        assert!(Arc::ptr_eq(&one, &caps.of("f", Some(1)).unwrap()));
        let three = caps.of("f", Some(3)).unwrap();
        assert_eq!(three.available_permits(), 3);
        assert!(caps.full().is_empty());
        assert!(caps.of("f", None).is_none());
        assert!(caps.full().is_empty());
    }
}
