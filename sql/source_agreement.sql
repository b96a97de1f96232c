-- Agreement between every two sources (reward models, LLM judges, verifiers, annotators,
-- and each against the consensus is in winner_disagreement): Kendall tau two ways.
--
-- mean_tau counts a pair one source ties in the denominator, so a judge that ties most pairs
-- reads near 0 whatever it says about the rest; tau_decided is the agreement over the pairs
-- both order strictly (pooled: sum of concordant - discordant over sum of decided pairs),
-- and decided_share says how many pairs that is. Read them together: a high tau_decided on a
-- small decided_share is a judge that is right when it speaks and rarely speaks.
SELECT
    source_a,
    source_b,
    count(*)                                                      AS groups,
    sum(pairs)                                                    AS pairs,
    round(avg(tau), 4)                                            AS mean_tau,
    sum(decided_pairs)                                            AS decided_pairs,
    round(sum(decided_pairs) / nullif(sum(pairs), 0), 4)          AS decided_share,
    round(sum(tau * pairs) / nullif(sum(decided_pairs), 0), 4)    AS tau_decided
FROM agreement
WHERE tau IS NOT NULL
GROUP BY source_a, source_b
ORDER BY source_a, source_b;
