//! The scheduler's protocol: the commands the edge sends to an environment's `Scheduler`
//! (the schedules API, and a wake-up), each with its reply.

use serde::{Deserialize, Serialize};

use crate::domain::schedule::{Schedule, ScheduleSpec};
use crate::platform::rpc;

/// Every command a scheduler takes; on the wire a variant is `{"<snake_case name>": {…}}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerCommand {
    Create(Create),
    Update(Update),
    GetSchedule(GetSchedule),
    ListSchedules(ListSchedules),
    SetActive(SetActive),
    DeleteSchedule(DeleteSchedule),
    Wake(Wake),
}

/// The scheduler's side of the wire.
pub struct Scheduling;

impl rpc::Protocol for Scheduling {
    const BINDING: &'static str = "SCHEDULER";
    type Envelope = SchedulerCommand;
}

crate::commands!(Scheduling => SchedulerCommand {
    Create => ScheduleReply,
    Update => ScheduleReply,
    GetSchedule => ScheduleReply,
    ListSchedules => ScheduleList,
    SetActive => ScheduleReply,
    DeleteSchedule => ScheduleReply,
    Wake => Woken,
});

/// Every command names the environment, which the object keeps (its alarm needs it).
#[derive(Debug, Serialize, Deserialize)]
pub struct Create {
    pub env: String,
    /// The caller's deduplication key: a second create with it updates the first.
    pub dedup_key: String,
    pub spec: ScheduleSpec,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Update {
    pub env: String,
    pub id: String,
    pub spec: ScheduleSpec,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GetSchedule {
    pub env: String,
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ListSchedules {
    pub env: String,
    pub page: usize,
    pub per_page: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SetActive {
    pub env: String,
    pub id: String,
    pub active: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteSchedule {
    pub env: String,
    pub id: String,
}

/// Brings the declared schedules up to date and arms the alarm (the heartbeat, and the
/// first request an isolate serves).
#[derive(Debug, Serialize, Deserialize)]
pub struct Wake {
    pub env: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ScheduleReply {
    Schedule(Schedule),
    NotFound,
    /// A declared schedule follows its task's declaration: the API cannot change or
    /// delete it.
    Declared,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ScheduleList {
    pub schedules: Vec<Schedule>,
    pub count: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Woken {
    /// The schedules that are active.
    pub active: usize,
}
