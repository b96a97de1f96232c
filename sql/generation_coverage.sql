-- Generation coverage per round: prompts, groups, candidates, duplicates and truncations.
--
-- Run it as it is:  duckdb runs/demo/catalog.duckdb < sql/generation_coverage.sql
-- A healthy round has groups = train prompts, candidates = groups * k, no duplicate ids,
-- no incomplete groups. `truncated` counts completions cut by max_new_tokens
-- (finish_reason = 'length'): many of them mean the limit is too small.
WITH per_group AS (
    SELECT round, count(*) AS k, count(DISTINCT candidate_idx) AS distinct_idx
    FROM candidates
    GROUP BY round, group_id
),
groups_per_round AS (
    SELECT round, count(*) AS groups,
           sum((k <> distinct_idx)::INT) AS groups_with_repeated_idx,
           min(k) AS min_k, max(k) AS max_k
    FROM per_group
    GROUP BY round
),
candidates_per_round AS (
    SELECT round,
           count(*)                                             AS candidates,
           count(*) - count(DISTINCT candidate_id)              AS duplicate_ids,
           sum(CASE WHEN finish_reason = 'length' THEN 1 ELSE 0 END) AS truncated,
           sum(CASE WHEN trim(text) = '' THEN 1 ELSE 0 END)     AS empty_texts,
           round(avg(n_tokens), 2)                              AS mean_tokens,
           count(DISTINCT config_hash)                          AS config_hashes
    FROM candidates
    GROUP BY round
),
train_prompts AS (
    SELECT round, count(*) AS train_prompts
    FROM prompts
    WHERE split = 'train'
    GROUP BY round
)
SELECT c.round, t.train_prompts, g.groups, c.candidates, c.duplicate_ids,
       g.groups_with_repeated_idx, g.min_k, g.max_k, c.truncated, c.empty_texts,
       c.mean_tokens, c.config_hashes
FROM candidates_per_round c
JOIN groups_per_round g USING (round)
LEFT JOIN train_prompts t USING (round)
ORDER BY c.round;
