"""Ways into the spool.

``api`` (``enqueue``/``enqueue_many``, validating), ``validate`` (input to
Structs with precise errors, packing records), ``lite`` (the standard-library
JSON path for hooks and tailers), and one module per source: ``hooks``,
``git``, ``jsonl``, ``transcripts``, ``statedirs``.
"""
