WITH ids AS (SELECT uuid7() AS id, 'https://example.test/hook/' || g AS url FROM generate_series(1,64) g),
upserted AS (
  INSERT INTO deliveries (id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at, state, attempts, last_status_code, last_error, last_attempt_at, next_attempt_at, finished_at, resent_from, ordering_key)
  SELECT id, 'shop', 'order.created', '0190f1a2-0000-7000-8000-000000000001'::uuid, url, 'POST', repeat('x', 299), 'json', now(), 'succeeded', 1, 200, NULL, now(), NULL, now(), NULL, NULL FROM ids
  ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, attempts = EXCLUDED.attempts WHERE deliveries.attempts < EXCLUDED.attempts
  RETURNING 1),
ins AS (
  INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, url, status_code, error_kind, error_message, response_excerpt)
  SELECT id, 1, now(), 1, url, 200, NULL, NULL, 'ok' FROM ids
  ON CONFLICT (delivery_id, attempt) DO NOTHING RETURNING 1)
SELECT (SELECT count(*) FROM upserted), (SELECT count(*) FROM ins);
