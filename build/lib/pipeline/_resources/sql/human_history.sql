-- Corrected annotations: each annotator's rankings that a later import replaced.
--
-- The newest import from an annotator on a group is what the consensus uses; the rows it
-- replaced stay here (superseded_human), with the file they came from (imported_from)
-- and the file that replaced them (superseded_by): the first 16 hex digits of each file's
-- SHA-256, as in imports/<sha16>.json and quarantine/<sha16>.parquet.
SELECT
    source                                        AS annotator,
    round,
    group_id,
    imported_from,
    superseded_by,
    count(*)                                      AS rows_replaced,
    string_agg(candidate_id || '=' || value::VARCHAR, ', ' ORDER BY candidate_id)
                                                  AS replaced_values
FROM superseded_human
GROUP BY source, round, group_id, imported_from, superseded_by
ORDER BY source, round, group_id, imported_from;
