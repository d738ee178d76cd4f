//! `SchedulerClient`: the only code that sends commands to schedulers or reads their
//! replies. A scheduler is named by its environment's slug.

use crate::platform::rpc::Client;

use super::protocol::Scheduling;

/// A client of one environment's scheduler (`protocol`).
pub type SchedulerClient = Client<Scheduling>;
