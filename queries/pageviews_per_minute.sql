-- Page views per user per 1-minute tumbling window: a windowed aggregation that updates its
-- count with every view, read as it changes (push) and then as it stands (pull).
CREATE STREAM pageviews (user_id STRING KEY, page STRING)
  WITH (kafka_topic='pageviews', value_format='JSON', partitions=1);
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225600000, 'ann', '/home');
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225615000, 'bob', '/home');
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225630000, 'ann', '/products/1');
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225645000, 'ann', '/products/2');
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225665000, 'ann', '/cart');
INSERT INTO pageviews (ROWTIME, user_id, page) VALUES (1767225670000, 'bob', '/products/1');
SET 'auto.offset.reset'='earliest';
CREATE TABLE views_per_minute AS
  SELECT user_id, COUNT(*) AS views FROM pageviews
  WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id EMIT CHANGES;
SELECT user_id, WINDOWSTART, views FROM views_per_minute EMIT CHANGES LIMIT 6;
SELECT user_id, WINDOWSTART, WINDOWEND, views FROM views_per_minute
  ORDER BY WINDOWSTART, user_id;
