-- Duplicate and near-empty candidates per round.
--
-- A group whose k samples repeat one text carries little ranking signal (the sampler's
-- temperature may be too low); near-empty completions (at most 1 character after trimming)
-- usually mean the policy stopped at once.
WITH dup AS (
    SELECT round, group_id, text, count(*) AS copies
    FROM candidates GROUP BY round, group_id, text
)
SELECT
    c.round,
    count(DISTINCT c.group_id)                                   AS groups,
    (SELECT sum(copies - 1) FROM dup d WHERE d.round = c.round)  AS duplicate_candidates,
    (SELECT count(DISTINCT group_id) FROM dup d
      WHERE d.round = c.round AND d.copies > 1)                  AS groups_with_duplicates,
    (SELECT count(*) FROM (SELECT group_id FROM dup d WHERE d.round = c.round
      GROUP BY group_id HAVING count(*) = 1))                    AS groups_all_identical,
    sum((length(trim(c.text)) <= 1)::INT)                        AS near_empty
FROM candidates c
GROUP BY c.round
ORDER BY c.round;
