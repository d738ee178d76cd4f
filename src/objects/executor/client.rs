//! `RunExecutorClient`: the only code that hands leases to run executors.

use crate::platform::rpc::Client;

use super::protocol::Executor;

/// A client of one run executor (`protocol`).
pub type RunExecutorClient = Client<Executor>;
