"""Policy enforcement points built on the PDP's public client API (:mod:`pdp.client`)."""
