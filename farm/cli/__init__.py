"""The `farm` command and the HTTP client it speaks to the farm with."""
