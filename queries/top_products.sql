-- Best sellers over the compared window.
SELECT product_id, sum(quantity) AS units, sum(amount) AS revenue
FROM orders
WHERE dt BETWEEN $start_date AND $run_date AND status = 'paid'
GROUP BY product_id
ORDER BY revenue DESC
LIMIT 10
