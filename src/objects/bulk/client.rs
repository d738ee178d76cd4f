//! `BulkActionsClient`: the only code that sends commands to an environment's bulk
//! actions object or reads its replies. The object is named by the environment's slug.

use crate::platform::rpc::Client;

use super::protocol::Bulk;

/// A client of one environment's bulk actions (`protocol`).
pub type BulkActionsClient = Client<Bulk>;
