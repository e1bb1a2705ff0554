"""Client plumbing shared by sources, sinks and storage (Kafka clients, warehouse URLs)."""
