//! The ingest service: gRPC Fire/ListEvents and the Admin API.
