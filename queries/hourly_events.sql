-- Event volume per hour and type. The stream stores event_time as an ISO string, the batch as a
-- timestamp: the cast makes the one query valid on both.
SELECT date_trunc('hour', CAST(event_time AS TIMESTAMP)) AS hour, event_type, count(*) AS events
FROM events
WHERE dt BETWEEN $start_date AND $run_date
GROUP BY 1, 2
