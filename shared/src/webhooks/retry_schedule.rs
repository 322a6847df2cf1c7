//! A delivery's retry schedule: the delays before attempts 2, 3, …. The server's default comes
//! from `SWITCHYARD_RETRY_SCHEDULE`; an endpoint may carry its own.

use std::time::Duration;

use crate::duration::parse_duration;

/// The delays before attempts 2, 3, …; attempt 1 runs at once. Its length + 1 is the attempt cap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrySchedule(pub Vec<Duration>);

impl RetrySchedule {
    pub fn max_attempts(&self) -> i32 {
        self.0.len() as i32 + 1
    }

    /// Delay before attempt `attempt + 1`, or `None` when `attempt` was the last one.
    pub fn delay_after(&self, attempt: i32) -> Option<Duration> {
        let idx = usize::try_from(attempt).ok()?.checked_sub(1)?;
        self.0.get(idx).copied()
    }
}

/// Parses `5s,5m,30m`; an empty text is a schedule of one attempt.
pub fn parse(s: &str) -> Result<RetrySchedule, String> {
    if s.trim().is_empty() {
        return Ok(RetrySchedule(Vec::new()));
    }
    s.split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()
        .map(RetrySchedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_attempts() {
        let s = parse("5s,5m").unwrap();
        assert_eq!(s.max_attempts(), 3);
        assert_eq!(s.delay_after(1), Some(Duration::from_secs(5)));
        assert_eq!(s.delay_after(2), Some(Duration::from_secs(300)));
        assert_eq!(s.delay_after(3), None);
        assert_eq!(s.delay_after(0), None);
        assert_eq!(parse("").unwrap().max_attempts(), 1);
    }
}
