//! `RunStoreClient`: the only code that sends commands to run stores or reads their
//! replies. Stores are named by `domain::basics::names::StoreName`.

use crate::platform::rpc::Client;

use super::protocol::Store;

/// A client of one run store: `send` takes any store command and answers its reply type
/// (`protocol`).
pub type RunStoreClient = Client<Store>;
