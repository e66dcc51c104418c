"""The HTTP surface: the route table and one module per endpoint family."""
