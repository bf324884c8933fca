//! The fleet's queue: devices by the time their next step is due, with a
//! way to bring one forward (a push nudge).

use std::collections::BTreeMap;
use std::time::Instant;

/// Items numbered `0..len`, each due at some time or out being worked on.
pub(crate) struct Schedule<T> {
    by_time: BTreeMap<(Instant, usize), T>,
    /// When each item is due; `None` while it is out.
    due: Vec<Option<Instant>>,
    /// Nudged while out: due at once when it comes back.
    nudged: Vec<bool>,
}

impl<T> Schedule<T> {
    pub fn new(len: usize) -> Self {
        Self {
            by_time: BTreeMap::new(),
            due: vec![None; len],
            nudged: vec![false; len],
        }
    }

    /// Puts item `index` back, due at `at` (or at `now`, if it was nudged
    /// while out).
    pub fn put(&mut self, index: usize, at: Instant, now: Instant, item: T) {
        let at = if std::mem::take(&mut self.nudged[index]) {
            at.min(now)
        } else {
            at
        };
        self.due[index] = Some(at);
        self.by_time.insert((at, index), item);
    }

    /// When the earliest item is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.by_time.first_key_value().map(|((at, _), _)| *at)
    }

    /// Takes the earliest item if it is due by `now`.
    pub fn take_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? > now {
            return None;
        }
        let ((_, index), item) = self.by_time.pop_first()?;
        self.due[index] = None;
        Some(item)
    }

    /// Brings item `index` forward to `now`; if it is out, it is due at once
    /// when it comes back. Returns whether anything moved.
    pub fn nudge(&mut self, index: usize, now: Instant) -> bool {
        match self.due.get(index).copied() {
            Some(Some(at)) if at > now => {
                if let Some(item) = self.by_time.remove(&(at, index)) {
                    self.due[index] = Some(now);
                    self.by_time.insert((now, index), item);
                }
                true
            }
            Some(Some(_)) => false,
            Some(None) => {
                self.nudged[index] = true;
                true
            }
            None => false,
        }
    }

    pub fn clear(&mut self) {
        self.by_time.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_out_in_time_order_and_a_nudge_brings_one_forward() {
        let now = Instant::now();
        let later = |s| now + Duration::from_secs(s);
        let mut schedule = Schedule::new(3);
        schedule.put(0, later(10), now, "a");
        schedule.put(1, later(5), now, "b");
        schedule.put(2, later(20), now, "c");
        assert_eq!(schedule.take_due(now), None);
        assert_eq!(schedule.take_due(later(6)), Some("b"));
        assert!(schedule.nudge(2, later(6)));
        assert_eq!(schedule.take_due(later(6)), Some("c"));
        // Nudged while out: due at once when put back.
        assert!(schedule.nudge(2, later(6)));
        schedule.put(2, later(60), later(7), "c");
        assert_eq!(schedule.take_due(later(7)), Some("c"));
        // Already due: nothing moves.
        assert!(!schedule.nudge(0, later(11)));
        assert_eq!(schedule.take_due(later(11)), Some("a"));
        assert_eq!(schedule.next_at(), None);
        assert!(!schedule.nudge(9, now), "no such item");
    }
}
