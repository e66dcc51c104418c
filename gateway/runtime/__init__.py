"""What a running gateway holds (the live table and what is derived from it) and how a reload swaps it."""
