"""Getting data back: replaying dead letters and the archive, rebuilding databases, backups.

Submodules: ``journal`` (reading archived and pending records), ``replay``
(dead letters and archive ranges, through the spool), ``rebuild`` (tier
databases from the journal), ``backup`` (online snapshots and restore),
``maintenance`` (integrity check, vacuum, migrate).
"""
