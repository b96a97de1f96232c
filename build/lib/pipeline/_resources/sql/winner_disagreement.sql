-- Groups where the consensus winner is not a source's winner, per source.
--
-- A source's winner is its best candidate by mean score (score sources), best rank
-- (humans) or most reconciled pairwise wins (LLM judges). A zero-weight gold verifier
-- that disagrees with the consensus often is the reward-hacking warning sign.
WITH pointwise AS (
    SELECT source, group_id, candidate_id,
           avg(CASE WHEN kind = 'rank' THEN -value ELSE value END) AS s
    FROM judgments
    WHERE status = 'scored' AND kind IN ('score', 'rank')
      AND source NOT IN (SELECT DISTINCT source FROM judgments WHERE view = -1)
    GROUP BY ALL
),
pairwise AS (
    SELECT source, group_id, candidate_id, sum(value) AS s FROM (
        SELECT source, group_id, candidate_id, value FROM judgments
        WHERE kind = 'pairwise' AND status = 'scored'
          AND (view = -1 OR source LIKE 'human:%')
        UNION ALL
        SELECT source, group_id, opponent_id, 1 - value FROM judgments
        WHERE kind = 'pairwise' AND status = 'scored'
          AND (view = -1 OR source LIKE 'human:%')
    ) GROUP BY ALL
),
source_best AS (
    SELECT source, group_id, candidate_id
    FROM (SELECT * FROM pointwise UNION ALL SELECT * FROM pairwise)
    QUALIFY s = max(s) OVER (PARTITION BY source, group_id)
),
per_group AS (
    SELECT b.source, b.group_id,
           bool_or(r.rank = 0) AS shares_a_winner
    FROM source_best b
    JOIN rankings r USING (candidate_id)
    GROUP BY b.source, b.group_id
)
SELECT source,
       count(*)                                   AS groups,
       sum((NOT shares_a_winner)::INT)            AS winner_differs,
       round(avg((NOT shares_a_winner)::INT), 4)  AS differ_rate
FROM per_group
GROUP BY source
ORDER BY differ_rate DESC, source;
