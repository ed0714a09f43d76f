-- The organization an object belongs to, for the events filter: the `organization_id` given at
-- creation (WorkOS's create takes one beside the context), or the context's own. NULL: an object
-- from before this version, or one created without it (its context's, if any, is used).
ALTER TABLE objects ADD COLUMN organization_id TEXT;
-- An object's event filed under an organization that is not its key context's (the create's
-- `organization_id`): found by the events filter, while `organization_id` stays the context's,
-- which alone decides where a BYOK key's events go (a label subscribes nothing).
ALTER TABLE audit_events ADD COLUMN filed_organization TEXT;
