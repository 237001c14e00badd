INSERT INTO scheduled_deliveries (id, tenant, event, webhook_id, target_url, method, payload, payload_kind, fired_at, next_attempt_at, resent_from)
SELECT uuid7(), 'shop', 'order.created', '0190f1a2-0000-7000-8000-000000000001'::uuid, 'https://example.test/hook/' || g, 'POST', repeat('x', 299), 'json', now(), now(), NULL FROM generate_series(1,2048) g
ON CONFLICT (id) DO NOTHING;
