-- Word count, the classic Kafka Streams example: lines of text are split into words (SPLIT
-- and EXPLODE give one row per word), and a table keeps a count per word, updated with every
-- line. The push query shows each update; the pull query reads the counts as they stand.
CREATE STREAM lines (line STRING)
  WITH (kafka_topic='lines', value_format='JSON', partitions=1);
INSERT INTO lines (line) VALUES ('the quick brown fox');
INSERT INTO lines (line) VALUES ('jumps over the lazy dog');
INSERT INTO lines (line) VALUES ('The dog sleeps');
SET 'auto.offset.reset'='earliest';
CREATE STREAM words AS
  SELECT EXPLODE(SPLIT(LCASE(line), ' ')) AS word FROM lines EMIT CHANGES;
CREATE TABLE word_counts AS
  SELECT word, COUNT(*) AS n FROM words GROUP BY word EMIT CHANGES;
SELECT word, n FROM word_counts EMIT CHANGES LIMIT 12;
SELECT word, n FROM word_counts WHERE n > 1 ORDER BY n DESC, word;
