-- Annotation exports: how each chose its groups, and how many have been ranked since.
--
-- selection = random is an unbiased sample (use it to estimate agreement or error rates);
-- disagreement, uncertainty and cycles are targeted samples (the hard groups): never read
-- their agreement as the pipeline's overall agreement. mean_score is what they were chosen
-- on (mean machine Kendall tau, smallest strength gap, or 3-cycles).
WITH annotated AS (
    SELECT DISTINCT group_id FROM judgments WHERE source LIKE 'human:%'
)
SELECT
    e.export_id,
    e.round,
    any_value(e.format)                               AS format,
    any_value(e.selection)                            AS selection,
    any_value(e.seed)                                 AS seed,
    min(e.exported_at)                                AS exported_at,
    count(*)                                          AS groups,
    count(a.group_id)                                 AS groups_annotated,
    round(avg(e.selection_score), 4)                  AS mean_score
FROM annotation_exports e
LEFT JOIN annotated a USING (group_id)
GROUP BY e.export_id, e.round
ORDER BY e.round, e.export_id;
