-- User sessions: a SESSION window closes after 5 minutes without a click, so ann has two
-- sessions. Bob's click arrives after ann's clicks of 15 minutes later: it is later than
-- the 1-minute grace period allows, so it is dropped (as ksqlDB drops it) and counted.
CREATE STREAM clicks (user_id STRING KEY, page STRING)
  WITH (kafka_topic='clicks', value_format='JSON', partitions=1);
INSERT INTO clicks (ROWTIME, user_id, page) VALUES (1767225600000, 'ann', '/home');
INSERT INTO clicks (ROWTIME, user_id, page) VALUES (1767225660000, 'ann', '/products/1');
INSERT INTO clicks (ROWTIME, user_id, page) VALUES (1767226500000, 'ann', '/home');
INSERT INTO clicks (ROWTIME, user_id, page) VALUES (1767225700000, 'bob', '/home');
INSERT INTO clicks (ROWTIME, user_id, page) VALUES (1767226560000, 'ann', '/cart');
SET 'auto.offset.reset'='earliest';
CREATE TABLE sessions AS
  SELECT user_id, COUNT(*) AS clicks, COLLECT_LIST(page) AS pages FROM clicks
  WINDOW SESSION (5 MINUTES, GRACE PERIOD 1 MINUTE) GROUP BY user_id EMIT CHANGES;
SELECT user_id, clicks FROM sessions EMIT CHANGES LIMIT 4;
SELECT user_id, WINDOWSTART, WINDOWEND, clicks, pages FROM sessions
  ORDER BY user_id, WINDOWSTART;
