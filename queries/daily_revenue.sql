-- Revenue and order count per day and region: the finance team's daily dashboard.
SELECT dt, region, sum(amount) AS revenue, count(*) AS orders
FROM orders
WHERE dt BETWEEN $start_date AND $run_date AND status = 'paid'
GROUP BY dt, region
