"""Policy bundles as artefacts: the catalog of their rules (``pdp policy catalog``)."""
