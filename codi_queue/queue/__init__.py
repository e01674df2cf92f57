"""The durable spool: checksummed frames in persist-queue directories, inbox and segments.

Submodules: ``frame`` (the frame format and persist-queue serializer), ``durable_queue``
(persist-queue's Queue, made durable), ``spool`` (layout, lock, claim,
archive), ``segment`` (reading a queue directory frame by frame).
"""
