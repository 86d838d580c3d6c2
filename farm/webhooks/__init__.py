"""Webhooks: a job's end POSTed, signed, to its `notify_url` and to FARM_WEBHOOK_URL (the contract's "Webhooks").
`outbox` writes each delivery in the transaction that ends the job; `courier` sends it once that commits, and
again with backoff while the receiver fails; `addresses` keeps the farm from calling private addresses."""
