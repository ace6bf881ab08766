-- q8 in batch (`eddy bench nexmark --check`): WITHIN 10 SECONDS as a condition on the two
-- event times.
SELECT p.id AS p_id, p.name, a.date_time AS starttime
FROM person p JOIN auction a ON p.id = a.seller
WHERE a.date_time BETWEEN p.date_time - INTERVAL '10' SECOND
                      AND p.date_time + INTERVAL '10' SECOND;
