"""The routing layer: a stable address per service in front of its pool of instances."""
