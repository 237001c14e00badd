-- Subscriptions: a webhook listens to a list of events and patterns, and
-- may filter on the fired data.
--
-- The `event` column keeps the first entry of the list and `more_events`
-- holds the rest, so that a release from before subscriptions, which reads
-- and writes `event` only, keeps working during a rolling upgrade: it sees
-- each webhook's first entry, and changing a webhook's event there changes
-- that first entry. A pattern entry is written as the user gave it
-- (`order.*`, `*`). `filter` is a CEL expression over the fired data; NULL
-- means every event gets a delivery.
ALTER TABLE webhooks
    ADD COLUMN more_events text[] NOT NULL DEFAULT '{}',
    ADD COLUMN filter text;

COMMENT ON COLUMN webhooks.event IS 'The first event name or pattern the webhook listens to; the others are in more_events.';
COMMENT ON COLUMN webhooks.more_events IS 'Event names and patterns (order.*, *) after the first, in the order given.';
COMMENT ON COLUMN webhooks.filter IS 'CEL expression over data, event and tenant; only events for which it is true get a delivery. NULL = every event.';
