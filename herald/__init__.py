"""Herald: a Pusher Channels protocol server. The version below is the only place it is written:
pyproject.toml reads it (dynamic version), the image's label and `herald --version` print it, and the
chart's appVersion is checked against it by tests/unit/test_helm_chart.py."""

__version__ = "0.1.0"
