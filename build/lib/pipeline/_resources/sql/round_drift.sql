-- Per-round drift: completion lengths, truncation, and each source's mean score.
--
-- Lengths that grow while a reward model's score grows and the gold verifier's does not
-- are the classic sign of a policy learning the reward model's taste for length.
WITH lengths AS (
    SELECT round,
           round(avg(n_tokens), 3)                       AS mean_tokens,
           round(avg(length(text)), 3)                   AS mean_chars,
           round(avg((finish_reason = 'length')::INT), 4) AS truncated_rate,
           count(*)                                      AS candidates
    FROM candidates GROUP BY round
),
scores AS (
    SELECT round, source, round(avg(value), 4) AS mean_score
    FROM judgments WHERE status = 'scored' AND kind = 'score' AND view >= 0
    GROUP BY round, source
)
SELECT l.round, l.candidates, l.mean_tokens, l.mean_chars, l.truncated_rate,
       s.source, s.mean_score
FROM lengths l LEFT JOIN scores s USING (round)
ORDER BY l.round, s.source;
