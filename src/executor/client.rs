//! Handing leases to `RunExecutor`s. A gate's executors are a pool of `EXECUTOR_POOL`
//! objects, `<gate>#<n>` with `n` the lease token modulo the pool's size: objects are
//! reused across attempts, and a gate's attempts spread over several of them.

use serde::{Deserialize, Serialize};
use worker::Env;

use crate::domain::gate::Lease;
use crate::rpc;

/// The Durable Object namespace binding of `RunExecutor`.
pub const RUN_EXECUTOR: &str = "RUN_EXECUTOR";

/// Executors per gate.
pub const EXECUTOR_POOL: u64 = 8;

/// What an executor is asked to do: run the attempt that `lease` allows, then release it
/// at `gate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub gate: String,
    pub lease: Lease,
}

impl Job {
    /// Unique per admission: two admissions of one run (a retry) are two jobs.
    pub fn key(&self) -> String {
        format!("{}:{}", self.lease.ticket.run_id, self.lease.token)
    }
}

/// The most leases one call hands to an executor: each call is an invocation of its own,
/// and Cloudflare lets an invocation wait on six connections at a time, so the attempts of
/// one hand never queue behind each other's endpoint calls.
pub const HAND_MAX: usize = 6;

/// The leases handed to an executor in one call.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hand {
    pub gate: String,
    pub leases: Vec<Lease>,
}

pub fn executor_name(gate: &str, lease: &Lease) -> String {
    format!("{gate}#{}", lease.token % EXECUTOR_POOL)
}

/// The calls that hand `admitted` to their executors: per executor, in admission order,
/// at most `HAND_MAX` leases each.
pub fn hands(gate: &str, admitted: Vec<Lease>) -> Vec<(String, Vec<Lease>)> {
    let mut hands: Vec<(String, Vec<Lease>)> = Vec::new();
    for lease in admitted {
        let name = executor_name(gate, &lease);
        match hands
            .iter_mut()
            .find(|(n, leases)| *n == name && leases.len() < HAND_MAX)
        {
            Some((_, leases)) => leases.push(lease),
            None => hands.push((name, vec![lease])),
        }
    }
    hands
}

/// Hands leases to an executor, which records them and starts their attempts.
pub async fn hand(
    env: &Env,
    gate: &str,
    executor: &str,
    leases: Vec<Lease>,
) -> Result<(), rpc::CallError> {
    let stub = env
        .durable_object(RUN_EXECUTOR)?
        .id_from_name(executor)?
        .get_stub()?;
    let hand = Hand {
        gate: gate.to_owned(),
        leases,
    };
    let _: bool = rpc::call(&stub, &hand).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::gate::Ticket;

    fn lease(token: u64) -> Lease {
        Lease {
            ticket: Ticket {
                run_id: format!("run_{token}"),
                store: "dev:abc".into(),
                concurrency_key: String::new(),
                queued_at: 0,
                expires_at: None,
                lease_ms: 1000,
            },
            lease_until: 1000,
            token,
        }
    }

    #[test]
    fn leases_go_to_their_executor_at_most_six_per_call_in_order() {
        let admitted = (0..20).map(lease).collect();
        let spread = hands("dev:q", admitted);
        let tokens = |i: usize| spread[i].1.iter().map(|l| l.token).collect::<Vec<_>>();
        // Tokens 0, 8 and 16 go to executor #0; 1, 9 and 17 to #1; and so on.
        assert_eq!(spread.len(), 8);
        assert_eq!(spread[0].0, "dev:q#0");
        assert_eq!(tokens(0), [0, 8, 16]);
        assert_eq!(tokens(7), [7, 15]);
        let one_executor = (0..14).map(|i| lease(i * EXECUTOR_POOL)).collect();
        let chunked = hands("dev:q", one_executor);
        let sizes: Vec<usize> = chunked.iter().map(|(_, l)| l.len()).collect();
        assert_eq!(sizes, [6, 6, 2]);
        assert!(chunked.iter().all(|(name, _)| name == "dev:q#0"));
    }
}
