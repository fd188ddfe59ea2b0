"""Raft consensus as a pure, deterministic state machine (the shape of etcd's `raft`).

The node never sleeps, sends, or writes: the shell calls `tick()` at a fixed rate,
`step(message)` for every message received, then drains `ready()`: it persists the
hard state and entries, sends the messages, applies the committed entries, and calls
`advance(ready)`. Randomness comes only from the injected `random.Random`.
"""
