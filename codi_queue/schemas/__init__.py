"""The one source of truth: operation Structs, their tables and tiers, and the migrations.

Submodules: ``ops`` (the Structs), ``types`` (shared field types and
normalisation), ``registry`` (tier, table, key, SQL), ``migrations`` (per-tier
SQL under ``user_version``), ``envelope`` (envelope, record, ids).
"""
