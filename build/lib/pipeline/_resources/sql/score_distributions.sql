-- Score distributions per source: count, mean, spread, quantiles and distinct values.
--
-- A source with one distinct value carries no ranking signal; compare a reward model's
-- spread with the verifier's to see how much it resolves. Reconciled pairwise verdicts
-- (view = -1) show the share of wins, losses and ties.
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
    count(DISTINCT value)                     AS distinct_values,
    round(avg((value = 0.5)::INT), 4)         AS share_exactly_half
FROM judgments
WHERE status = 'scored' AND (kind = 'score' OR view = -1)
GROUP BY source, kind
ORDER BY source, kind;
