"""What is observed of each request: the record's sinks (metrics, access line), logs, redaction."""
