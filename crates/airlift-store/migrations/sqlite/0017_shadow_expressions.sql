-- Desired documents for the devices a target expression matches
-- (docs/targets.md): a group row whose `expression` holds the canonical
-- text of the parsed expression (its id is `expr:<that text>`), with
-- neither a tag nor attributes. Which devices it reaches is decided in
-- memory from each device's facts, so there is nothing to index beyond
-- the partial index that finds the expression groups; their number is
-- bounded with every group's by `--shadow-max-groups`. The SQLite and
-- PostgreSQL migrations of this number are the same.
ALTER TABLE group_shadows ADD COLUMN expression TEXT;
CREATE INDEX group_shadows_expression ON group_shadows (id) WHERE expression IS NOT NULL;
