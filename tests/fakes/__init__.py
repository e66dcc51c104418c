"""What the tests build on: fake providers, request bodies, tables, gateways and the shared helpers."""
