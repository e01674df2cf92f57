"""Ways into the spool.

``api`` (``enqueue``/``enqueue_many``, validating), ``validate`` (input to
Structs with precise errors, packing records), ``records`` (the size split
both paths share, and the standard-library JSON records for hooks and
tailers), ``schemacheck`` (the standard-library validation behind
``codi-queue enqueue``), and one module per source: ``hooks``,
``git``, ``jsonl``, ``transcripts``, ``statedirs``.
"""
