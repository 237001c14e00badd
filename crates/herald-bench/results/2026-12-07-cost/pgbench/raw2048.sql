INSERT INTO bench_attempts (delivery_id, attempt, started_at, duration_ms, url, status_code, error_kind, error_message, response_excerpt)
SELECT uuid7(), 1, now(), 1, 'https://example.test/hook/' || g, 200, NULL, NULL, 'ok' FROM generate_series(1,2048) g;
