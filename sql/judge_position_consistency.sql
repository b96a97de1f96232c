-- Position consistency per LLM judge: does a pair's verdict survive a change of order?
--
-- Every group is shown in at least two orders (views). For each pair of candidates seen in
-- two or more views: consistent = every view orders the pair the same way (ties included);
-- decided = consistent and not a tie; flipped = the views disagree, which the reconciled
-- verdict (view = -1) records as a tie. A judge with a high flipped rate is mostly
-- reporting positions, not quality.
WITH llm_scores AS (  -- filtered before the self-join below, not after it
    SELECT source, group_id, candidate_id, view, value
    FROM judgments
    WHERE kind = 'score' AND view >= 0 AND status = 'scored' AND source LIKE 'llm:%'
),
listwise AS (
    SELECT a.source, a.group_id, a.candidate_id AS i, b.candidate_id AS j, a.view,
           sign(a.value - b.value) AS verdict
    FROM llm_scores a
    JOIN llm_scores b
      ON a.source = b.source AND a.group_id = b.group_id AND a.view = b.view
     AND a.candidate_id < b.candidate_id
),
pairwise AS (
    SELECT source, group_id, candidate_id AS i, opponent_id AS j, view,
           sign(value - 0.5) AS verdict
    FROM judgments
    WHERE kind = 'pairwise' AND view >= 0 AND status = 'scored'
),
per_pair AS (
    SELECT source, group_id, i, j, count(*) AS views,
           min(verdict) AS lo, max(verdict) AS hi
    FROM (SELECT * FROM listwise UNION ALL SELECT * FROM pairwise)
    GROUP BY source, group_id, i, j
    HAVING count(*) >= 2
)
SELECT
    source,
    count(*)                                        AS pairs_seen_in_several_orders,
    round(avg((lo = hi)::INT), 4)                    AS consistent_rate,
    round(avg((lo = hi AND lo <> 0)::INT), 4)        AS decided_rate,
    round(avg((lo = hi AND lo = 0)::INT), 4)         AS tie_rate,
    round(avg((lo <> hi)::INT), 4)                   AS flipped_rate
FROM per_pair
GROUP BY source
ORDER BY source;
