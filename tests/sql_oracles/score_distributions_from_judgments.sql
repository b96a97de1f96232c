-- Oracle for tests/test_source_groups.py: share_exact_ties of sql/score_distributions.sql as
-- it was computed before the ranking stage counted ties into the source_groups table, by
-- sorting every group's scores per view (8 s on a 1M-group catalog, hence the table): the
-- share of a score source's candidates equal to a neighbour in their group's sorted scores.
SELECT source,
       round(sum(len(list_filter(range(1, len(s) + 1),
                                 lambda i: s[i] = s[i - 1] OR s[i] = s[i + 1])))
             / sum(len(s)), 4) AS share_exact_ties
FROM (SELECT source, list_sort(list(value)) AS s
      FROM judgments
      WHERE status = 'scored' AND kind = 'score'
      GROUP BY source, group_id, view)
GROUP BY source
ORDER BY source;
