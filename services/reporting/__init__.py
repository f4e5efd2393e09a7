"""Reporting: read models built only from events: the register, the monthly statistics
table, trends and the procedure's metrics."""
