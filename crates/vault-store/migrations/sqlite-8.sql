-- The organization an object belongs to, for the events filter: the `organization_id` given at
-- creation (WorkOS's create takes one beside the context), or the context's own. NULL: an object
-- from before this version, or one created without it (its context's, if any, is used).
ALTER TABLE objects ADD COLUMN organization_id TEXT;
