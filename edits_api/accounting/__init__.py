"""Spend control: who may call what (admission), how often (limits), at what cost (costs, budgets),
and the record of every request (ledger, journal)."""
