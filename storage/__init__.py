"""Durable state: the relational schema, the instance archive and the event streams.

`storage` depends on no other kidneyct package; `ingest`, `classifier` and `training` use it.
"""
