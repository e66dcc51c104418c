"""Configuration built at start-up: settings from the environment, the provider table and its schemas."""
