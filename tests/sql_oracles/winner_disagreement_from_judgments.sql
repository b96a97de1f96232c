-- Oracle for tests/test_source_groups.py: sql/winner_disagreement.sql as it was before the
-- ranking stage wrote the source_groups table, computed straight from every judgment row
-- (13 s on a 1M-group catalog, hence the table). Kept to check the table against it.
WITH reconciled AS (
    SELECT DISTINCT source FROM judgments WHERE view = -1
),
multi_view AS (  -- pointwise sources with several views: their scores are averaged first
    SELECT source FROM judgments
    WHERE status = 'scored' AND kind IN ('score', 'rank')
    GROUP BY source HAVING count(DISTINCT view) > 1
),
pointwise AS NOT MATERIALIZED (
    SELECT source, group_id, candidate_id,
           CASE WHEN kind = 'rank' THEN -value ELSE value END AS s, view
    FROM judgments
    WHERE status = 'scored' AND kind IN ('score', 'rank')
      AND source NOT IN (SELECT source FROM reconciled)
),
candidate_s AS (  -- one value per (source, candidate)
    SELECT source, group_id, candidate_id, s FROM pointwise
    WHERE source NOT IN (SELECT source FROM multi_view)
    UNION ALL
    SELECT source, any_value(group_id), candidate_id, avg(s) FROM pointwise
    WHERE source IN (SELECT source FROM multi_view)
    GROUP BY source, candidate_id
    UNION ALL
    SELECT source, any_value(group_id), candidate_id, sum(value) FROM (
        -- each verdict counts for both sides: value for the first, 1 - value for the other
        SELECT source, group_id,
               CASE WHEN second THEN opponent_id ELSE candidate_id END AS candidate_id,
               CASE WHEN second THEN 1 - value ELSE value END AS value
        FROM judgments, (VALUES (false), (true)) AS side(second)
        WHERE kind = 'pairwise' AND status = 'scored'
          AND (view = -1 OR source LIKE 'human:%')
          -- a side that gets 0 adds nothing: a candidate that never wins is left out, and it
          -- cannot be the best, since the wins of a group's candidates add up to its pairs
          AND (CASE WHEN second THEN value < 1 ELSE value > 0 END)
    ) GROUP BY source, candidate_id
),
per_group AS (
    -- top2: the two best values; winner_s: the best value among consensus winners (rank 0)
    SELECT source, group_id,
           max(s, 2)                                                       AS top2,
           max(s) FILTER (WHERE candidate_id IN (
               SELECT candidate_id FROM rankings WHERE rank = 0))           AS winner_s
    FROM candidate_s
    GROUP BY source, group_id
),
flagged AS (
    SELECT source,
           winner_s IS DISTINCT FROM top2[1]            AS differs,
           len(top2) = 2 AND top2[2] = top2[1]          AS tied_winner
    FROM per_group
    WHERE group_id IN (SELECT group_id FROM groups)  -- groups ranked so far
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
