//! The sender service: consumes deliveries, sends HTTP(S) requests, records attempts, schedules retries.
