"""The `queue` role: topics on a consistent-hashing ring over Redis Streams."""
