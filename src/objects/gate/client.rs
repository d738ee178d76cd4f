//! `QueueGateClient`: the only code that sends commands to queue gates or reads their
//! replies. Gates are named by `domain::basics::names::GateName`.

use crate::platform::rpc::Client;

use super::protocol::Gate;

/// A client of one queue gate (`protocol`).
pub type QueueGateClient = Client<Gate>;
