//! Which of librdkafka's log lines to show: the same line again within a
//! minute is counted, not shown. librdkafka logs every retry of some
//! requests (a transactional producer asking for its id while the broker
//! still aborts the previous transaction retries every millisecond or so,
//! and says so each time); an operator needs the first line and how many
//! followed, not a screenful.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a line stays quiet after it was shown.
const QUIET: Duration = Duration::from_secs(60);

/// More distinct lines than this within a minute (every one different)
/// start the count afresh rather than grow without bound.
const MAX_LINES: usize = 256;

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Show it; `suppressed` times it came while quiet since it was last shown.
    Show { suppressed: u64 },
    /// Shown within the minute: count it only.
    Quiet,
}

#[derive(Debug, Default)]
pub struct Repeats {
    lines: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Repeats {
    pub fn check(&self, line: &str, now: Instant) -> Verdict {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((shown, suppressed)) = lines.get_mut(line) {
            if now.duration_since(*shown) < QUIET {
                *suppressed += 1;
                return Verdict::Quiet;
            }
            let verdict = Verdict::Show {
                suppressed: *suppressed,
            };
            *shown = now;
            *suppressed = 0;
            return verdict;
        }
        if lines.len() >= MAX_LINES {
            lines.retain(|_, (shown, _)| now.duration_since(*shown) < QUIET);
            if lines.len() >= MAX_LINES {
                lines.clear();
            }
        }
        lines.insert(line.to_string(), (now, 0));
        Verdict::Show { suppressed: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_again_within_a_minute_is_counted_then_shown_with_the_count() {
        let r = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(r.check("a", t0), Verdict::Show { suppressed: 0 });
        assert_eq!(r.check("b", t0), Verdict::Show { suppressed: 0 });
        for s in 1..=3 {
            assert_eq!(r.check("a", t0 + Duration::from_secs(s)), Verdict::Quiet);
        }
        assert_eq!(
            r.check("a", t0 + QUIET),
            Verdict::Show { suppressed: 3 },
            "a minute on, shown with how many were held back"
        );
        assert_eq!(r.check("a", t0 + QUIET), Verdict::Quiet);
        assert_eq!(
            r.check("b", t0 + QUIET * 3),
            Verdict::Show { suppressed: 0 }
        );
    }

    #[test]
    fn many_distinct_lines_do_not_grow_the_table_without_bound() {
        let r = Repeats::default();
        let t0 = Instant::now();
        for i in 0..(MAX_LINES * 3) {
            assert_eq!(r.check(&i.to_string(), t0), Verdict::Show { suppressed: 0 });
        }
        assert!(r.lines.lock().unwrap().len() <= MAX_LINES);
    }
}
