//! Operators' actions on schedules that the API and the CLI share: each audited with who did it.

use uuid::Uuid;

use crate::access::Caller;
use crate::error::Result;
use crate::model::TaskId;
use crate::schedule::{ChangeError, SchedulePatch, ScheduleRecord, ScheduleSpec, Scheduler};

impl Scheduler {
    /// Create a schedule (planned at once), recorded as created by `caller`; audited.
    pub async fn create_by(&self, caller: &Caller, spec: &ScheduleSpec) -> Result<ScheduleRecord, ChangeError> {
        let rec = self.create(spec, Some(&caller.key_id)).await?;
        let detail = serde_json::json!({ "schedule_id": rec.id, "name": rec.name, "cron": rec.cron, "timezone": rec.timezone, "paused": rec.paused });
        self.chronos.audit(caller, "schedule_create", None, detail).await?;
        Ok(rec)
    }

    /// Change a schedule (its planned occurrences follow the new rule); audited with the fields
    /// that were given.
    pub async fn update_by(&self, caller: &Caller, id: Uuid, patch: &SchedulePatch) -> Result<ScheduleRecord, ChangeError> {
        let changed: Vec<&str> = [
            ("name", patch.name.is_some()),
            ("cron", patch.cron.is_some()),
            ("timezone", patch.timezone.is_some()),
            ("task", patch.task.is_some()),
            ("overlap", patch.overlap.is_some()),
            ("misfire", patch.misfire.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, given)| given.then_some(f))
        .collect();
        let rec = self.update(id, patch).await?;
        let detail = serde_json::json!({ "schedule_id": id, "name": rec.name, "changed": changed });
        self.chronos.audit(caller, "schedule_update", None, detail).await?;
        Ok(rec)
    }

    /// Pause (drops the occurrences not started) or resume (plans from now); audited.
    pub async fn set_paused_by(&self, caller: &Caller, id: Uuid, paused: bool) -> Result<ScheduleRecord, ChangeError> {
        let rec = self.set_paused(id, paused).await?;
        let action = if paused { "schedule_pause" } else { "schedule_resume" };
        self.chronos.audit(caller, action, None, serde_json::json!({ "schedule_id": id, "name": rec.name })).await?;
        Ok(rec)
    }

    /// Delete a schedule and its occurrences not started; `None` when there is none. Audited.
    pub async fn delete_by(&self, caller: &Caller, id: Uuid) -> Result<Option<ScheduleRecord>> {
        let Some(rec) = self.get(id).await? else { return Ok(None) };
        if !self.delete(id).await? {
            return Ok(None);
        }
        self.chronos.audit(caller, "schedule_delete", None, serde_json::json!({ "schedule_id": rec.id, "name": rec.name })).await?;
        Ok(Some(rec))
    }

    /// Run the schedule's task once now (ignoring its overlap policy: an operator asked for
    /// it); `None` when there is no such schedule. Audited.
    pub async fn trigger_by(&self, caller: &Caller, id: Uuid) -> Result<Option<TaskId>> {
        let Some(task_id) = self.trigger(id).await? else { return Ok(None) };
        self.chronos.audit(caller, "schedule_trigger", Some(task_id), serde_json::json!({ "schedule_id": id, "task_id": task_id })).await?;
        Ok(Some(task_id))
    }
}
