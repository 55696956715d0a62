"""The demo: three digits classifiers, one of them fed inverted inputs and one replaced by a
bad model for a while, monitored end to end (``mlwatcher demo``)."""
