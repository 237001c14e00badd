//! The herald command-line tool: configure webhooks, fire events, inspect deliveries, run a demo receiver.
