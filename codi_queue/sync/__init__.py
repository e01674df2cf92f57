"""Team scale: this machine's journal pushed to one PostgreSQL, shared tiers pulled back.

PostgreSQL is a sink and a source, never on the enqueue path: ``push`` reads
what the consumer has already applied (the journal, up to each tier's local
cursor) and ``pull`` brings other machines' rows back through the local spool,
so the consumer stays the only writer of the local databases. docs/team.md.
"""
