-- Sessions reaching each step of the funnel, per day.
SELECT dt, event_type AS step, count(DISTINCT session_id) AS sessions
FROM events
WHERE dt BETWEEN $start_date AND $run_date
  AND event_type IN ('page_view', 'add_to_cart', 'checkout', 'purchase')
GROUP BY dt, event_type
