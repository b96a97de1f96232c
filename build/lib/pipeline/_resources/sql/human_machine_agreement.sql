-- Human vs machine agreement: mean Kendall tau of each annotator against each machine
-- source, over the groups both judged; and each annotator against the other annotators.
--
-- tau = 1: same order; 0: unrelated; -1: reversed. Low agreement of one annotator with
-- everyone points at the annotator; of one machine source with every human, at the source.
WITH pairs AS (
    SELECT round, group_id, source_a AS a, source_b AS b, pairs, tau FROM agreement
    UNION ALL
    SELECT round, group_id, source_b, source_a, pairs, tau FROM agreement
)
SELECT
    a                                         AS annotator,
    CASE WHEN b LIKE 'human:%' THEN 'human' ELSE 'machine' END AS other_kind,
    b                                         AS other_source,
    count(*)                                  AS groups,
    sum(pairs)                                AS pairs,
    round(avg(tau), 4)                        AS mean_tau,
    round(avg((tau > 0)::INT), 4)             AS share_groups_agreeing
FROM pairs
WHERE a LIKE 'human:%' AND tau IS NOT NULL
GROUP BY a, b
ORDER BY a, other_kind, b;
