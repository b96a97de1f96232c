-- Score distributions per source: count, mean, spread, quantiles, distinct values and the
-- share of exact ties.
--
-- A source with one distinct value carries no ranking signal; compare a reward model's
-- spread with the verifier's to see how much it resolves. share_exact_ties is the share of
-- a source's candidates whose score equals another candidate's in the same group and view
-- (a listwise judge that gives every candidate 5.0 has 1.0); for reconciled pairwise
-- verdicts (view = -1, LLM judges) it is the share of verdicts that are ties (0.5), and the
-- mean is the share of wins.
WITH scored AS (
    SELECT source, kind, group_id, view, value
    FROM judgments
    WHERE status = 'scored' AND (kind = 'score' OR view = -1)
),
same_value AS (
    SELECT source, kind, value, count(*) AS n
    FROM scored
    GROUP BY source, kind, group_id, view, value
),
ties AS (
    SELECT source, kind,
           sum(CASE WHEN kind = 'pairwise' THEN (value = 0.5)::INT * n
                    WHEN n > 1 THEN n ELSE 0 END)        AS tied
    FROM same_value
    GROUP BY source, kind
),
stats AS (
    SELECT
        source, kind,
        count(*)                                  AS n,
        round(avg(value), 4)                      AS mean,
        round(stddev_pop(value), 4)               AS sd,
        round(min(value), 4)                      AS min,
        round(quantile_cont(value, 0.1), 4)       AS p10,
        round(quantile_cont(value, 0.5), 4)       AS p50,
        round(quantile_cont(value, 0.9), 4)       AS p90,
        round(max(value), 4)                      AS max,
        count(DISTINCT value)                     AS distinct_values
    FROM scored
    GROUP BY source, kind
)
SELECT s.*, round(t.tied / s.n, 4) AS share_exact_ties
FROM stats s
JOIN ties t USING (source, kind)
ORDER BY source, kind;
