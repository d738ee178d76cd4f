//! Group commit: callers add items and wait for their replies; one flush at a time sends
//! everything added so far, and items added meanwhile go out together in the next. Under
//! load a flush carries many items, so a call per item becomes a call per flush. Plain
//! Rust (no runtime types), so the rule is tested on the host.

use std::cell::{Cell, RefCell};
use std::future::Future;

use futures_channel::oneshot;

pub struct GroupCommit<I, R> {
    pending: RefCell<Vec<(I, oneshot::Sender<R>)>>,
    flushing: Cell<bool>,
}

impl<I, R> Default for GroupCommit<I, R> {
    fn default() -> Self {
        GroupCommit {
            pending: RefCell::new(Vec::new()),
            flushing: Cell::new(false),
        }
    }
}

/// A reply that never came (the flush failed before answering the item).
#[derive(Debug, PartialEq, Eq)]
pub struct NoReply;

impl<I, R> GroupCommit<I, R> {
    /// Queues `item`. Returns its reply to come, and whether the caller must start the
    /// flush loop (`flush_all`) because none is running.
    pub fn add(&self, item: I) -> (impl Future<Output = Result<R, NoReply>>, bool) {
        let (sender, receiver) = oneshot::channel();
        self.pending.borrow_mut().push((item, sender));
        let lead = !self.flushing.replace(true);
        (async move { receiver.await.map_err(|_| NoReply) }, lead)
    }

    /// Sends what is queued, batch after batch, until nothing is: `send` answers a batch
    /// with one reply per item, in order. An item left without a reply gets `NoReply`.
    pub async fn flush_all<F, Fut>(&self, mut send: F)
    where
        F: FnMut(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        loop {
            let batch = std::mem::take(&mut *self.pending.borrow_mut());
            if batch.is_empty() {
                self.flushing.set(false);
                return;
            }
            answer(batch, &mut send).await;
        }
    }

    /// Sends what is queued as one batch and returns: an item added from now on leads a
    /// group of its own (so a caller that flushes is never kept flushing for others).
    pub async fn flush_once<F, Fut>(&self, mut send: F)
    where
        F: FnMut(Vec<I>) -> Fut,
        Fut: Future<Output = Vec<R>>,
    {
        let batch = std::mem::take(&mut *self.pending.borrow_mut());
        self.flushing.set(false);
        if !batch.is_empty() {
            answer(batch, &mut send).await;
        }
    }
}

async fn answer<I, R, F, Fut>(batch: Vec<(I, oneshot::Sender<R>)>, send: &mut F)
where
    F: FnMut(Vec<I>) -> Fut,
    Fut: Future<Output = Vec<R>>,
{
    let (items, senders): (Vec<I>, Vec<_>) = batch.into_iter().unzip();
    let replies = send(items).await;
    for (sender, reply) in senders.into_iter().zip(replies) {
        let _ = sender.send(reply); // the caller may have gone: nothing to do
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[test]
    fn items_added_before_a_flush_go_out_together_and_each_gets_its_reply() {
        let group: GroupCommit<u32, String> = GroupCommit::default();
        let (a, lead_a) = group.add(1);
        let (b, lead_b) = group.add(2);
        assert!(
            lead_a && !lead_b,
            "the first caller starts the loop, the second joins"
        );
        let mut batches = Vec::new();
        group
            .flush_all(|items| {
                batches.push(items.clone());
                async move { items.iter().map(|i| format!("r{i}")).collect() }
            })
            .now_or_never()
            .expect("no await left");
        assert_eq!(batches, [vec![1, 2]]);
        assert_eq!(a.now_or_never(), Some(Ok("r1".to_owned())));
        assert_eq!(b.now_or_never(), Some(Ok("r2".to_owned())));
        let (_, lead) = group.add(3);
        assert!(lead, "the loop ended: the next item starts another");
    }

    #[test]
    fn items_added_during_a_flush_go_out_in_the_next_batch() {
        let group: GroupCommit<u32, u32> = GroupCommit::default();
        let (_, _) = group.add(1);
        let mut batches = Vec::new();
        let mut late = None;
        group
            .flush_all(|items| {
                if late.is_none() {
                    late = Some(group.add(2)); // arrives while the first batch is out
                }
                batches.push(items.clone());
                async move { items }
            })
            .now_or_never()
            .expect("no await left");
        assert_eq!(batches, [vec![1], vec![2]]);
        let (reply, lead) = late.expect("added");
        assert!(!lead, "a flush was running: it took the item");
        assert_eq!(reply.now_or_never(), Some(Ok(2)));
    }

    #[test]
    fn a_single_flush_answers_its_group_and_lets_a_later_item_lead_the_next() {
        let group: GroupCommit<u32, u32> = GroupCommit::default();
        let (a, lead_a) = group.add(1);
        let (b, lead_b) = group.add(2);
        assert!(lead_a && !lead_b);
        let mut batches = Vec::new();
        let mut late = None;
        group
            .flush_once(|items| {
                late = Some(group.add(3)); // arrives while the group is out
                batches.push(items.clone());
                async move { items.iter().map(|i| i * 10).collect() }
            })
            .now_or_never()
            .expect("no await left");
        assert_eq!(
            batches,
            [vec![1, 2]],
            "one batch: the late item is not in it"
        );
        assert_eq!(a.now_or_never(), Some(Ok(10)));
        assert_eq!(b.now_or_never(), Some(Ok(20)));
        let (late_reply, late_lead) = late.expect("added");
        assert!(
            late_lead,
            "no flush is running for it: it leads the next group"
        );
        let mut late_reply = Box::pin(late_reply);
        assert_eq!((&mut late_reply).now_or_never(), None, "not answered yet");
        group
            .flush_once(|items| async move { items })
            .now_or_never()
            .expect("no await left");
        assert_eq!(late_reply.now_or_never(), Some(Ok(3)));
    }

    #[test]
    fn an_item_the_flush_does_not_answer_gets_no_reply_instead_of_waiting_forever() {
        let group: GroupCommit<u32, u32> = GroupCommit::default();
        let (a, _) = group.add(1);
        let (b, _) = group.add(2);
        group
            .flush_all(|_| async { vec![10] })
            .now_or_never()
            .expect("no await left");
        assert_eq!(a.now_or_never(), Some(Ok(10)));
        assert_eq!(b.now_or_never(), Some(Err(NoReply)));
    }
}
