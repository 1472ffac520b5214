-- Distinct users with at least one event per day.
SELECT dt, count(DISTINCT user_id) AS active_users
FROM events
WHERE dt BETWEEN $start_date AND $run_date
GROUP BY dt
