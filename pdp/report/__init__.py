"""``pdp report``: governance figures computed from a verified decision log.

``entries`` reads records (the one adapter), ``figures`` computes every figure, ``source``
verifies the log and binds it to its checkpoint, ``html`` renders, ``evidence`` writes the
auditor's pack, ``cli`` registers the commands.
"""
