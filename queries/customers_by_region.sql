-- Distinct paying customers per region (a multiset comparison: no key).
SELECT region, count(DISTINCT customer_id) AS customers
FROM orders
WHERE dt BETWEEN $start_date AND $run_date AND status = 'paid'
GROUP BY region
