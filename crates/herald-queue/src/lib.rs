//! RabbitMQ topology, confirmed publisher and consumer setup for Herald (lapin).
