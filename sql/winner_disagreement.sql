-- Groups where the consensus winner is not a source's winner, per source, with how often
-- the source names no single winner at all.
--
-- A source's winner is the candidate that wins most of its own verdicts (a tie counts
-- half): its best mean score (score sources), best rank (humans) or most reconciled
-- pairwise wins (LLM judges). When several candidates share the best, the source's winner
-- "agrees" if any of them is a consensus winner. A source that ties everything therefore
-- never disagrees: read differ_rate next to tied_winner_share (groups where the source's
-- best is shared by several candidates) and decided_differ_rate (differ_rate over the
-- groups where the source named one winner). A zero-weight gold verifier that disagrees
-- with the consensus often is the reward-hacking warning sign.
--
-- The ranking stage writes these facts per group and source (the source_groups table), so
-- this reads one row per group and source, not every judgment. It therefore covers the
-- groups and sources `grpo rank` ranked, as they were then: groups where the source compares
-- at least two candidates (scores equal in float32 are a tie, as the ranking compares
-- them), human pairwise verdicts in several views averaged per pair; a round ranked by a
-- version before that table has no rows until `grpo rank` runs on it again.
SELECT source,
       count(*)                                              AS groups,
       sum((NOT agrees)::INT)                                AS winner_differs,
       round(avg((NOT agrees)::INT), 4)                      AS differ_rate,
       round(avg((best > 1)::INT), 4)                        AS tied_winner_share,
       round(avg((NOT agrees)::INT) FILTER (WHERE best = 1), 4) AS decided_differ_rate
FROM source_groups
GROUP BY source
ORDER BY differ_rate DESC, source;
