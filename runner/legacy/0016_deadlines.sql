-- A run's deadline (`cairn start --deadline/--timeout`, `StartOptions::deadline`, a
-- workflow's default): past it, the run stops at its next step boundary and fails in
-- the `deadline` category. A parked run wakes at its deadline at the latest, so a
-- deadline of thirty days costs what one of thirty seconds does: nothing until it comes.
ALTER TABLE cairn.runs ADD COLUMN deadline timestamptz;
