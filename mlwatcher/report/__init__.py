"""``mlwatcher report``: PNG charts and an HTML page from the Parquet metrics data set."""
