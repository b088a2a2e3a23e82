"""The debug console's server: page, snapshot, live stream and test events (docs/console.md)."""
