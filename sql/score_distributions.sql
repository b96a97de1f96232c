-- Score distributions per source: count, mean, spread, quantiles, distinct values and the
-- share of exact ties.
--
-- A source with one distinct value carries no ranking signal; compare a reward model's
-- spread with the verifier's to see how much it resolves. share_exact_ties is the share of
-- a source's candidates whose score (its mean over views) equals another candidate's in
-- the same group (a listwise judge that gives every candidate 5.0 has 1.0), equal as the
-- ranking compares them (in float32), over the groups `grpo rank` has ranked and in which
-- the source compares at least two candidates: the ranking stage counts them into the
-- source_groups table, so this query does not sort every group's scores again. It is null
-- for a source with no ranked group (a round not ranked yet, or ranked by a version before
-- that table; a source the ranking left out). For reconciled pairwise verdicts (view = -1,
-- LLM judges) it is the share of verdicts that are ties (0.5), and the mean is the share
-- of wins. distinct_values is exact up to 100,000; above that it is a HyperLogLog estimate
-- (within a few percent), which is all a continuous score needs.
WITH scored AS NOT MATERIALIZED (
    SELECT source, kind, group_id, view, value
    FROM judgments
    WHERE status = 'scored' AND (kind = 'score' OR view = -1)
),
scores AS (
    SELECT
        source, kind,
        count(*)                                  AS n,
        avg(value)                                AS mean,
        stddev_pop(value)                         AS sd,
        min(value)                                AS min,
        quantile_cont(value, [0.1, 0.5, 0.9])     AS q,  -- one pass for all three
        max(value)                                AS max,
        approx_count_distinct(value)              AS approx_distinct
    FROM scored
    WHERE kind = 'score'
    GROUP BY source, kind
),
-- Reconciled verdicts take three values (0, 0.5, 1): their distribution is read exactly from
-- a count per value instead of from tens of millions of rows. value_at(r) is the value at
-- 0-based rank r of the sorted verdicts, the first whose running count exceeds r.
verdict_counts AS (
    SELECT source, kind, value, count(*) AS c
    FROM scored
    WHERE kind = 'pairwise'
    GROUP BY source, kind, value
),
verdict_ranks AS (
    SELECT *, sum(c) OVER (PARTITION BY source, kind ORDER BY value) AS below_next,
           sum(c) OVER (PARTITION BY source, kind) AS n
    FROM verdict_counts
),
verdict_quantiles AS (  -- quantile_cont: between ranks floor(h) and floor(h) + 1, h = (n - 1) p
    SELECT source, kind, p, any_value(h) - floor(any_value(h)) AS frac,
           min(value) FILTER (WHERE below_next > floor(h))     AS lo,
           min(value) FILTER (WHERE below_next > floor(h) + 1) AS hi
    FROM verdict_ranks, (SELECT unnest([0.1, 0.5, 0.9]) AS p),
         LATERAL (SELECT (n - 1) * p AS h)
    GROUP BY source, kind, p
),
verdicts AS (
    SELECT v.source, v.kind, any_value(v.n) AS n,
           sum(v.value * v.c) / any_value(v.n) AS mean,
           sqrt(greatest(sum(v.c * v.value * v.value) / any_value(v.n)
                         - pow(sum(v.value * v.c) / any_value(v.n), 2), 0)) AS sd,
           min(v.value) AS min,
           (SELECT list(lo + frac * (coalesce(hi, lo) - lo) ORDER BY p) FROM verdict_quantiles q
             WHERE q.source = v.source AND q.kind = v.kind) AS q,
           max(v.value) AS max, count(*) AS distinct_values,
           coalesce(sum(v.c) FILTER (WHERE v.value = 0.5), 0) / any_value(v.n) AS tie_share
    FROM verdict_ranks v
    GROUP BY v.source, v.kind
),
exact_distinct AS (
    SELECT source, kind, count(DISTINCT value) AS distinct_values
    FROM scored
    WHERE kind = 'score'
      AND (source, kind) IN (SELECT source, kind FROM scores WHERE approx_distinct < 100000)
    GROUP BY source, kind
),
score_ties AS (  -- a source with reconciled verdicts: its ties are those of its verdicts
    SELECT source, 'score' AS kind, sum(tied) / sum(judged) AS tie_share
    FROM source_groups
    WHERE source NOT IN (SELECT source FROM verdict_counts)
    GROUP BY source
),
all_sources AS (
    SELECT s.source, s.kind, s.n, s.mean, s.sd, s.min, s.q, s.max,
           coalesce(d.distinct_values, s.approx_distinct) AS distinct_values, t.tie_share
    FROM scores s
    LEFT JOIN exact_distinct d USING (source, kind)
    LEFT JOIN score_ties t USING (source, kind)
    UNION ALL
    SELECT source, kind, n, mean, sd, min, q, max, distinct_values, tie_share FROM verdicts
)
SELECT source, kind, n, round(mean, 4) AS mean, round(sd, 4) AS sd, round(min, 4) AS min,
       round(q[1], 4) AS p10, round(q[2], 4) AS p50, round(q[3], 4) AS p90,
       round(max, 4) AS max, distinct_values,
       round(tie_share, 4) AS share_exact_ties
FROM all_sources
ORDER BY source, kind;
