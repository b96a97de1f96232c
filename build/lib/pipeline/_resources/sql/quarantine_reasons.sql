-- Quarantined input rows by file and reason, with one example row each.
--
-- Nothing is dropped silently: every rejected row of an imported file is here, and
-- accepted + quarantined = rows read for every file.
SELECT source_file, reason, count(*) AS rows, min(row_number) AS first_row,
       any_value(raw) AS example
FROM quarantine
GROUP BY source_file, reason
ORDER BY source_file, rows DESC, reason;
