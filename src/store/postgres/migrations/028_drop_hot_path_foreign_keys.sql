-- Two foreign-key checks off the write path. A foreign key is checked by a trigger per row, which
-- probes the referenced index and locks the referenced row FOR KEY SHARE (a WAL record per row).
--
-- runs (automation_id) → automations: implied by runs (automation_id, version) →
-- automation_versions, whose automation_id references automations; the composite key stays.
--
-- step_runs (run_id) → runs: step rows are written by two statements only, each of which writes
-- a step row only for a run it wrote itself in the same statement (store/postgres/runs.ts: the
-- insert joins the runs it made, a checkpoint the runs its rev check updated), and no statement
-- deletes runs. The check found nothing those joins had not already decided, on every step of
-- every run. Measured: parking 100,000 runs on timers in batches of 1,000 spent about 6.5 ms per
-- batch in these two checks (auto_explain), and their row locks wrote a WAL record per run.
ALTER TABLE runs DROP CONSTRAINT runs_automation_id_fkey;
ALTER TABLE step_runs DROP CONSTRAINT step_runs_run_id_fkey;
