"""What every thaw service shares: configuration, wire schema, bus, database,
blob store, the service base class and telemetry."""
