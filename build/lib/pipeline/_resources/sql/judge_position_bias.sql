-- Position bias per LLM judge: mean listwise score by the position a candidate was shown
-- at, and for pairwise judges how often the candidate shown first wins.
--
-- Without bias the listwise means are flat across positions and the first-shown win rate
-- is near 0.5 (ties count half).
SELECT source, 'listwise mean score' AS measure, order_shown AS position,
       count(*) AS n, round(avg(value), 4) AS value
FROM judgments
WHERE kind = 'score' AND source LIKE 'llm:%' AND status = 'scored' AND view >= 0
GROUP BY source, order_shown
UNION ALL
SELECT source, 'pairwise first-shown win rate', 0,
       count(*), round(avg(CASE WHEN order_shown = 0 THEN value ELSE 1 - value END), 4)
FROM judgments
WHERE kind = 'pairwise' AND status = 'scored' AND view >= 0
GROUP BY source
ORDER BY source, measure, position;
