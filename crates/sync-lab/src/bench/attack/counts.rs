//! What one kind of attacker achieved, counted by outcome ("connections", "FrameTooLarge", …),
//! in the order the outcomes first happened.

use std::sync::{Mutex, PoisonError};

/// Outcome counters shared by the attackers of one kind.
#[derive(Debug, Default)]
pub(super) struct Counts(Mutex<Vec<(&'static str, u64)>>);

impl Counts {
    /// Adds `n` to the counter of `outcome`.
    pub(super) fn add(&self, outcome: &'static str, n: u64) {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match counts.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, c)) => *c += n,
            None => counts.push((outcome, n)),
        }
    }

    /// The counter of `outcome` (0 if it never happened).
    pub(super) fn get(&self, outcome: &str) -> u64 {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        counts
            .iter()
            .find(|(o, _)| *o == outcome)
            .map_or(0, |(_, c)| *c)
    }

    /// Every counter as `outcome n`, comma-separated (`nothing` when none).
    pub(super) fn summary(&self) -> String {
        let counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.is_empty() {
            return "nothing".into();
        }
        counts
            .iter()
            .map(|(o, c)| format!("{o} {c}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_add_up_in_first_seen_order() {
        let c = Counts::default();
        assert_eq!(c.summary(), "nothing");
        c.add("connections", 1);
        c.add("FrameTooLarge", 2);
        c.add("connections", 3);
        assert_eq!(c.get("connections"), 4);
        assert_eq!(c.get("Unauthorized"), 0);
        assert_eq!(c.summary(), "connections 4, FrameTooLarge 2");
    }
}
