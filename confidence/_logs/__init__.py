"""The log pipeline: flag logs, exposure dedup, delivery, tracked events and the spool."""
