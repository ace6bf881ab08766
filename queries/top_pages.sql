-- Top pages per hopping window: views per page in 2-minute windows that advance by 1
-- minute, then the busiest pages of one window by a pull query with ORDER BY and LIMIT.
CREATE STREAM views (user_id STRING KEY, page STRING)
  WITH (kafka_topic='views', value_format='JSON', partitions=1);
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225600000, 'ann', '/home');
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225610000, 'bob', '/home');
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225620000, 'cat', '/products/1');
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225670000, 'ann', '/products/1');
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225680000, 'bob', '/products/1');
INSERT INTO views (ROWTIME, user_id, page) VALUES (1767225690000, 'cat', '/cart');
SET 'auto.offset.reset'='earliest';
CREATE TABLE page_views AS
  SELECT page, COUNT(*) AS views FROM views
  WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE) GROUP BY page EMIT CHANGES;
SELECT page, WINDOWSTART, views FROM page_views EMIT CHANGES LIMIT 10;
SELECT page, views FROM page_views WHERE WINDOWSTART = 1767225600000
  ORDER BY views DESC, page LIMIT 2;
