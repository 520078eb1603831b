-- A failed run an operator has dealt with otherwise (`cairn dlq dismiss`) leaves the
-- dead-letter list but stays failed; retrying or failing again clears the mark.
ALTER TABLE cairn.runs ADD COLUMN dead_letter_dismissed_at timestamptz;
