//! The store's activity (`domain::api::activity`): runs created, completed and failed,
//! tallied in memory and written a row per minute once the minute is over, so counting
//! costs a run nothing. A minute still open when the object is evicted is lost: the
//! chart is a view of the load, not an account (the operations account is `meter`).

use worker::Result;

use super::{now, RunStore};
use crate::domain::api::activity::{minute_of, Counts, Event, KEPT_MS};
use crate::domain::basics::time::Millis;
use crate::platform::sql::rows;

impl RunStore {
    /// Counts `event` (if any) and writes the minutes that are over.
    pub(super) fn tally(&self, event: Option<Event>) -> Result<()> {
        let now = now();
        let ended = {
            let mut tally = self.tally.borrow_mut();
            if let Some(event) = event {
                tally.record(now, event);
            }
            tally.take_ended(now)
        };
        if ended.is_empty() {
            return Ok(());
        }
        let sql = self.sql();
        for (minute, c) in ended {
            sql.exec(
                "INSERT INTO activity (minute, created, completed, failed) VALUES (?, ?, ?, ?)
                 ON CONFLICT (minute) DO UPDATE SET created = created + excluded.created,
                     completed = completed + excluded.completed, failed = failed + excluded.failed",
                vec![
                    minute.into(),
                    (c.created as i64).into(),
                    (c.completed as i64).into(),
                    (c.failed as i64).into(),
                ],
            )?;
        }
        sql.exec(
            "DELETE FROM activity WHERE minute < ?",
            vec![(minute_of(now) - KEPT_MS).into()],
        )?;
        Ok(())
    }

    /// The minutes from `since` on: those written, and those still in memory.
    pub(super) fn activity_since(&self, since: Millis) -> Result<Vec<(Millis, Counts)>> {
        self.tally(None)?;
        let mut minutes = rows(
            &self.sql(),
            "SELECT minute, created, completed, failed FROM activity WHERE minute >= ? ORDER BY minute",
            vec![minute_of(since).into()],
        )?
        .into_iter()
        .map(|mut r| {
            let minute = r.int()?;
            let mut n = || r.int().map(|v| v.max(0) as u64);
            Ok((
                minute,
                Counts {
                    created: n()?,
                    completed: n()?,
                    failed: n()?,
                },
            ))
        })
        .collect::<Result<Vec<_>>>()?;
        minutes.extend(self.tally.borrow().pending(since));
        Ok(minutes)
    }
}
