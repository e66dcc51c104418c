"""The call to a provider: headers, attempts and retries, time limits, the relay of its answer."""
