-- Ties per round: how often the consensus cannot separate candidates, and at the top.
--
-- tied_top = groups whose best rank is shared; a tie is a set in training (no loss prefers
-- one member over another), so many ties mean little signal.
WITH per_group AS (
    SELECT round, group_id,
           count(*) FILTER (WHERE rank >= 0)             AS ranked,
           count(DISTINCT rank) FILTER (WHERE rank >= 0) AS levels,
           count(*) FILTER (WHERE rank = 0)              AS at_top,
           count(*) FILTER (WHERE rank < 0)              AS excluded
    FROM rankings
    GROUP BY round, group_id
)
SELECT
    round,
    count(*)                                     AS groups,
    sum((levels = 1)::INT)                       AS all_tied,
    sum((at_top > 1)::INT)                       AS tied_top,
    round(avg(1 - levels / nullif(ranked, 0)), 4) AS mean_tie_share,
    sum(excluded)                                AS excluded_candidates
FROM per_group
GROUP BY round
ORDER BY round;
