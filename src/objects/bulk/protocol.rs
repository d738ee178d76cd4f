//! The bulk actions object's protocol: the commands the edge sends (the bulk-actions
//! API), each with its reply.

use serde::{Deserialize, Serialize};

use crate::domain::api::bulk::BulkAction;
use crate::platform::rpc;

/// Every command; on the wire a variant is `{"<snake_case name>": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkCommand {
    CreateBulk(CreateBulk),
    GetBulk(GetBulk),
    ListBulk(ListBulk),
    AbortBulk(AbortBulk),
}

/// The bulk actions object's side of the wire.
pub struct Bulk;

impl rpc::Protocol for Bulk {
    const BINDING: &'static str = "BULK_ACTIONS";
    type Envelope = BulkCommand;
}

crate::commands!(Bulk => BulkCommand {
    CreateBulk => BulkAction,
    GetBulk => Option<BulkAction>,
    ListBulk => Vec<BulkAction>,
    AbortBulk => Option<BulkAction>,
});

/// Every command names the environment, which the object keeps for its alarm.
#[derive(Debug, Serialize, Deserialize)]
pub struct CreateBulk {
    pub env: String,
    pub action: Box<BulkAction>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetBulk {
    pub env: String,
    pub id: String,
}

/// Newest first, `limit` of them, after the action `after` if given.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListBulk {
    pub env: String,
    pub limit: usize,
    pub after: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AbortBulk {
    pub env: String,
    pub id: String,
}
