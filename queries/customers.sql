-- The customer directory as of the run's cut-off: the batch snapshot against the stream's
-- change log (compacted by dualrun: latest version per customer, deletes removed).
SELECT customer_id, name, region, tier
FROM customers
