-- Intransitive groups: every cycle found, in the consensus and in each source's own verdicts.
--
-- source = 'consensus' is the weighted majority graph of all sources; any other source is a
-- judge or annotator that contradicted itself (A>B, B>C, C>A). Cycle members tie in the
-- consensus ranking: they are reported, never forced into an order.
SELECT
    c.round, c.group_id, g.status, g.weight,
    c.source, c.n_3cycles, len(c.members) AS n_members, c.members,
    p.prompt
FROM cycles c
JOIN groups g USING (group_id)
LEFT JOIN candidates cand ON cand.candidate_id = c.members[1]
LEFT JOIN prompts p ON p.round = c.round AND p.prompt_id = cand.prompt_id
ORDER BY c.round, c.group_id, c.source = 'consensus' DESC, c.source;
