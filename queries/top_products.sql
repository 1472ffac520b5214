-- Best sellers over the compared window.
SELECT product_id, sum(quantity) AS units, sum(amount) AS revenue
FROM orders
WHERE dt BETWEEN $start_date AND $run_date AND status = 'paid'
GROUP BY product_id
-- product_id breaks ties: without it, two products tied on revenue at the cut-off would make
-- the top ten a coin toss between nights (dualrun warns about such a LIMIT).
ORDER BY revenue DESC, product_id
LIMIT 10
