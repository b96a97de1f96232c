-- Candidates flagged by the prompt-injection detector, and how each source scored them.
--
-- `rank_in_group` is the flagged candidate's position among its group by that source's
-- mean score (1 = best): a flagged candidate that a judge ranks first, while the verifier
-- does not, is a sign the injection worked.
WITH flagged_groups AS (  -- only these groups' scores are needed: usually a handful
    SELECT DISTINCT group_id FROM candidates WHERE injection IS NOT NULL
),
scores AS (
    SELECT source, group_id, candidate_id, avg(value) AS score
    FROM judgments
    WHERE kind = 'score' AND status = 'scored'
      AND group_id IN (SELECT group_id FROM flagged_groups)
    GROUP BY source, group_id, candidate_id
),
ranked AS (
    SELECT *, rank() OVER (PARTITION BY source, group_id ORDER BY score DESC) AS rank_in_group
    FROM scores
)
SELECT c.round, c.group_id, c.candidate_id, c.injection AS flags, c.text,
       r.source, round(r.score, 4) AS score, r.rank_in_group
FROM candidates c
LEFT JOIN ranked r USING (candidate_id)
WHERE c.injection IS NOT NULL
ORDER BY c.round, c.group_id, c.candidate_id, r.source;
