-- The claim without a walk over every automation, and run priority (see
-- store/postgres/migrations/014_claim_marks.sql for the design). SQLite has one writer at a time,
-- so the marks need no locks here: the triggers insert a mark when a run becomes due earlier than
-- every mark of its automation, the claimer raises the marks of an automation with nothing due.

ALTER TABLE runs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN priority_error TEXT;

-- claimKey (engine/store.ts): due_at − priority × AGING_STEP_MS (1000).
CREATE INDEX runs_claim ON runs (automation_id, due_at - priority * 1000, id) WHERE due_at IS NOT NULL;

CREATE TABLE due_marks (
  automation_id  TEXT NOT NULL,
  due_at         INTEGER NOT NULL
);
CREATE INDEX due_marks_by_automation ON due_marks (automation_id, due_at);
CREATE INDEX due_marks_due ON due_marks (due_at, automation_id);

INSERT INTO due_marks (automation_id, due_at)
  SELECT automation_id, min(due_at) FROM runs WHERE due_at IS NOT NULL GROUP BY automation_id;

CREATE TRIGGER runs_mark_due_insert AFTER INSERT ON runs
  WHEN NEW.due_at IS NOT NULL
BEGIN
  INSERT INTO due_marks (automation_id, due_at) SELECT NEW.automation_id, NEW.due_at
    WHERE NOT EXISTS (SELECT 1 FROM due_marks WHERE automation_id = NEW.automation_id AND due_at <= NEW.due_at);
END;

CREATE TRIGGER runs_mark_due_update AFTER UPDATE OF due_at ON runs
  WHEN NEW.due_at IS NOT NULL AND (OLD.due_at IS NULL OR NEW.due_at < OLD.due_at)
BEGIN
  INSERT INTO due_marks (automation_id, due_at) SELECT NEW.automation_id, NEW.due_at
    WHERE NOT EXISTS (SELECT 1 FROM due_marks WHERE automation_id = NEW.automation_id AND due_at <= NEW.due_at);
END;
