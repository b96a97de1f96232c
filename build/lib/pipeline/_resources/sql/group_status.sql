-- Group status per round after the consensus: what training will see.
--
-- weight is what the config's policies give each status (drop = 0, downweight, keep = 1);
-- agreement is the mean Kendall tau between weighted sources.
SELECT round, status, count(*) AS groups,
       round(avg(weight), 3) AS mean_weight,
       round(avg(agreement), 4) AS mean_agreement,
       round(avg(n_sources), 2) AS mean_sources,
       sum(n_cycles) AS consensus_3cycles,
       sum((n_source_cycles > 0)::INT) AS groups_with_source_cycles
FROM groups
GROUP BY round, status
ORDER BY round, groups DESC;
