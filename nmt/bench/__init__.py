"""`nmt bench`: measurements, one module per command, each returning rows that the CLI prints
as a table and writes as JSON (`report`). Nothing here asserts a speed; docs/performance.md
quotes the commands and their figures."""
