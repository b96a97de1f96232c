-- Score distributions per source: count, mean, spread, quantiles, distinct values and the
-- share of exact ties.
--
-- A source with one distinct value carries no ranking signal; compare a reward model's
-- spread with the verifier's to see how much it resolves. share_exact_ties is the share of
-- a source's candidates whose score equals another candidate's in the same group and view
-- (a listwise judge that gives every candidate 5.0 has 1.0); for reconciled pairwise
-- verdicts (view = -1, LLM judges) it is the share of verdicts that are ties (0.5), and the
-- mean is the share of wins. distinct_values is exact up to 100,000; above that it is a
-- HyperLogLog estimate (within a few percent), which is all a continuous score needs.
WITH scored AS (
    SELECT source, kind, group_id, view, value
    FROM judgments
    WHERE status = 'scored' AND (kind = 'score' OR view = -1)
),
stats AS (
    SELECT
        source, kind,
        count(*)                                            AS n,
        round(avg(value), 4)                                AS mean,
        round(stddev_pop(value), 4)                         AS sd,
        round(min(value), 4)                                AS min,
        quantile_cont(value, [0.1, 0.5, 0.9])               AS q,  -- one pass for all three
        round(max(value), 4)                                AS max,
        approx_count_distinct(value)                        AS approx_distinct,
        sum((kind = 'pairwise' AND value = 0.5)::INT)       AS tied_verdicts
    FROM scored
    GROUP BY source, kind
),
exact_distinct AS (
    SELECT source, kind, count(DISTINCT value) AS distinct_values
    FROM scored
    WHERE (source, kind) IN (SELECT source, kind FROM stats WHERE approx_distinct < 100000)
    GROUP BY source, kind
),
score_ties AS (  -- in each group's sorted scores, the ones equal to a neighbour
    SELECT source, kind,
           sum(len(list_filter(range(1, len(s) + 1),
                               lambda i: s[i] = s[i - 1] OR s[i] = s[i + 1]))) AS tied
    FROM (SELECT source, kind, list_sort(list(value)) AS s FROM scored WHERE kind = 'score'
          GROUP BY source, kind, group_id, view)
    GROUP BY source, kind
)
SELECT s.source, s.kind, s.n, s.mean, s.sd, s.min,
       round(s.q[1], 4) AS p10, round(s.q[2], 4) AS p50, round(s.q[3], 4) AS p90,
       s.max, coalesce(d.distinct_values, s.approx_distinct) AS distinct_values,
       round((s.tied_verdicts + coalesce(t.tied, 0)) / s.n, 4) AS share_exact_ties
FROM stats s
LEFT JOIN exact_distinct d USING (source, kind)
LEFT JOIN score_ties t USING (source, kind)
ORDER BY s.source, s.kind;
