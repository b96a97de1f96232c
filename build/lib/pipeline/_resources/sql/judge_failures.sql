-- Judging failures per source: items judged, scored, failed, failure rate, top reasons.
--
-- An item is one (candidate, source, view[, opponent]) row shown to a source; reconciled
-- rows (view = -1) are derived and not counted. scored + failed = items, always: a failed
-- item keeps its raw output and its error, and is never turned into a score.
WITH items AS (
    SELECT * FROM judgments WHERE view >= 0
),
reasons AS (
    SELECT source, coalesce(error, '') AS error, count(*) AS n,
           row_number() OVER (PARTITION BY source ORDER BY count(*) DESC) AS rn
    FROM items WHERE status = 'failed'
    GROUP BY source, error
)
SELECT
    i.source,
    count(*)                                                    AS items,
    sum((i.status = 'scored')::INT)                              AS scored,
    sum((i.status = 'failed')::INT)                              AS failed,
    round(avg((i.status = 'failed')::INT), 4)                    AS failure_rate,
    (SELECT string_agg(r.error || ' (' || r.n || ')', '; ' ORDER BY r.n DESC)
       FROM reasons r WHERE r.source = i.source AND r.rn <= 3)   AS top_errors
FROM items i
GROUP BY i.source
ORDER BY i.source;
