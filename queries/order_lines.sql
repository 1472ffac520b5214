-- Row-level reconciliation of orders: every order, every field.
SELECT order_id, dt, customer_id, region, product_id, quantity, amount, status, order_ts
FROM orders
WHERE dt BETWEEN $start_date AND $run_date
