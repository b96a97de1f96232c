-- Groups where the consensus winner is not a source's winner, per source, with how often
-- the source names no single winner at all.
--
-- A source's winner is its best candidate by mean score (score sources), best rank
-- (humans) or most reconciled pairwise wins (LLM judges); when several candidates share the
-- best value, the source's winner "agrees" if any of them is a consensus winner. A source
-- that ties everything therefore never disagrees: read differ_rate next to
-- tied_winner_share (groups where the source's best is shared by several candidates) and
-- decided_differ_rate (differ_rate over the groups where the source named one winner).
-- A zero-weight gold verifier that disagrees with the consensus often is the
-- reward-hacking warning sign.
WITH reconciled AS (
    SELECT DISTINCT source FROM judgments WHERE view = -1
),
pointwise AS (
    SELECT source, group_id, candidate_id,
           avg(CASE WHEN kind = 'rank' THEN -value ELSE value END) AS s
    FROM judgments
    WHERE status = 'scored' AND kind IN ('score', 'rank')
      AND source NOT IN (SELECT source FROM reconciled)
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
per_group AS (
    -- top2: the two best values; winner_s: the best value among consensus winners (rank 0).
    -- Groups not ranked yet (no rankings row) are left out.
    SELECT c.source, c.group_id,
           max(c.s, 2)                              AS top2,
           max(c.s) FILTER (WHERE r.rank = 0)       AS winner_s
    FROM (SELECT * FROM pointwise UNION ALL SELECT * FROM pairwise) c
    JOIN rankings r USING (candidate_id)
    GROUP BY c.source, c.group_id
),
flagged AS (
    SELECT source,
           winner_s IS DISTINCT FROM top2[1]            AS differs,
           len(top2) = 2 AND top2[2] = top2[1]          AS tied_winner
    FROM per_group
)
SELECT source,
       count(*)                                          AS groups,
       sum(differs::INT)                                 AS winner_differs,
       round(avg(differs::INT), 4)                       AS differ_rate,
       round(avg(tied_winner::INT), 4)                   AS tied_winner_share,
       round(avg(differs::INT) FILTER (WHERE NOT tied_winner), 4) AS decided_differ_rate
FROM flagged
GROUP BY source
ORDER BY differ_rate DESC, source;
