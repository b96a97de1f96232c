-- Generation coverage per round: prompts, groups, candidates, duplicates and truncations.
--
-- Run it as it is:  duckdb runs/demo/catalog.duckdb < sql/generation_coverage.sql
-- A healthy round has groups = train prompts, candidates = groups * k, no duplicate ids,
-- no incomplete groups. `truncated` counts completions cut by max_new_tokens
-- (finish_reason = 'length'): many of them mean the limit is too small.
WITH per_group AS (
    SELECT round, group_id, count(*) AS k, count(DISTINCT candidate_idx) AS distinct_idx
    FROM candidates
    GROUP BY round, group_id
),
train_prompts AS (
    SELECT round, count(*) AS train_prompts
    FROM prompts
    WHERE split = 'train'
    GROUP BY round
)
SELECT
    c.round,
    any_value(t.train_prompts)                                   AS train_prompts,
    count(DISTINCT c.group_id)                                   AS groups,
    count(*)                                                     AS candidates,
    count(*) - count(DISTINCT c.candidate_id)                    AS duplicate_ids,
    (SELECT count(*) FROM per_group g
      WHERE g.round = c.round AND g.k <> g.distinct_idx)         AS groups_with_repeated_idx,
    (SELECT min(k) FROM per_group g WHERE g.round = c.round)     AS min_k,
    (SELECT max(k) FROM per_group g WHERE g.round = c.round)     AS max_k,
    sum(CASE WHEN c.finish_reason = 'length' THEN 1 ELSE 0 END)  AS truncated,
    sum(CASE WHEN trim(c.text) = '' THEN 1 ELSE 0 END)           AS empty_texts,
    round(avg(c.n_tokens), 2)                                    AS mean_tokens,
    count(DISTINCT c.config_hash)                                AS config_hashes
FROM candidates c
LEFT JOIN train_prompts t USING (round)
GROUP BY c.round
ORDER BY c.round;
